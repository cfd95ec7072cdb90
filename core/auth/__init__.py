"""Authentication concepts below the managers: who a caller is and what an endpoint asks."""
