"""ChannelShift domain: channels, goals, campaigns, incentives and their persistence."""
