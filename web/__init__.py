"""ChannelShift HTTP layer: JSON API, marketer UI and their wiring."""
