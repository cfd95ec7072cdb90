"""Rate limits and bans below the managers: plans, the sliding-window stores, ban records."""
