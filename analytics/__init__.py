"""ChannelShift analytics: sufficient statistics from SQL, pure statistics, reports and exports."""
