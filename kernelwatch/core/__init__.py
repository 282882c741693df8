"""What every kernelwatch process shares: settings, database, models, sweep specs, catalogue."""
