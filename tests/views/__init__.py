"""Pages and admin as each persona sees them (HTTP through the test client)."""
