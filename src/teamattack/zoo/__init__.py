"""Model zoo (placeholder)."""
