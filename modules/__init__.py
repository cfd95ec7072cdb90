"""Plugin modules shipped with Keel: one package per module."""
