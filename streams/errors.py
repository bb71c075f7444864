"""The exception tree. User mistakes raise a CityOpsError subclass whose message
names the field and the fix; the CLI prints it without a traceback."""


class CityOpsError(Exception):
    """Root of every error cityops raises on purpose."""


class TopologyError(CityOpsError):
    """topology.yaml or the sensor catalog is invalid."""


class ConfigError(CityOpsError):
    """A setting (environment variable, CLI option) is invalid."""
