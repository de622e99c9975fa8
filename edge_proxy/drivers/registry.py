"""The entry-point registry that finds drivers, importing each only when a config names it."""

from __future__ import annotations

from importlib import metadata

from edge_proxy.config import LinkConfig, ProfileConfig
from edge_proxy.drivers.api import Driver
from edge_proxy.errors import DriverError

#: The entry-point group drivers register under, built-in and third-party alike.
ENTRY_POINT_GROUP = "edge_proxy.drivers"


class DriverRegistry:
    """Finds drivers by name through entry points, importing each only when it is used."""

    def __init__(self) -> None:
        self._loaded: dict[str, type[Driver]] = {}
        self._extra: dict[str, type[Driver]] = {}

    def register(self, name: str, driver: type[Driver]) -> None:
        """Register a driver class directly (tests, embedding)."""
        self._extra[name] = driver

    def _entry_points(self) -> dict[str, metadata.EntryPoint]:
        return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}

    def names(self) -> list[str]:
        """Names of every installed driver."""
        return sorted(set(self._entry_points()) | set(self._extra))

    def get(self, name: str) -> type[Driver]:
        """The driver class called ``name``; DriverError if it is missing or broken."""
        if name in self._extra:
            return self._extra[name]
        if name in self._loaded:
            return self._loaded[name]
        eps = self._entry_points()
        ep = eps.get(name)
        if ep is None:
            known = ", ".join(sorted(set(eps) | set(self._extra))) or "none"
            raise DriverError(f"no driver named {name!r} is installed (installed: {known})")
        try:
            obj = ep.load()
        except Exception as exc:
            raise DriverError(
                f"driver {name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}"
            ) from exc
        if not (isinstance(obj, type) and issubclass(obj, Driver)):
            raise DriverError(f"driver {name!r} ({ep.value}) is not an edge_proxy Driver class")
        self._loaded[name] = obj
        return obj

    def check_link(self, driver: str, link: LinkConfig) -> list[str]:
        """Config checker: the driver exists, loads, and accepts the link mapping."""
        try:
            cls = self.get(driver)
        except DriverError as exc:
            return [f".driver: {exc}"]
        return cls.check_link(link)

    def check_profile(self, driver: str, profile: ProfileConfig) -> list[str]:
        """Config checker: the driver accepts the profile (a missing driver is check_link's)."""
        try:
            cls = self.get(driver)
        except DriverError:
            return []
        return cls.check_profile(profile)


#: The process-wide registry the CLI and the daemon use.
registry = DriverRegistry()
