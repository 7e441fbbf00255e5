"""The console's screens, one module per area; each exports ``ROUTES``."""
