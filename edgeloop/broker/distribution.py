"""Java and the Apache Kafka broker's jars: found or fetched once, then reused.

The broker is the ``org.apache.kafka:kafka_2.13`` artifact with all its runtime dependencies, resolved
from Maven Central by ``pom.xml`` (next to this module) with ``mvn dependency:copy-dependencies`` into
``cache_dir()/kafka-<version>/libs``. The directory is filled under a file lock, in a scratch directory
renamed into place when complete, and stamped with a digest of the pom: a later call whose stamp matches
does nothing (no Maven, no network); a changed pom fetches again.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgeloop.broker import BrokerError
from edgeloop.settings import cache_dir

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.4.0"
MIN_JAVA_MAJOR = 17  # Kafka 4.x brokers need Java 17+
POM = Path(__file__).with_name("pom.xml")
STAMP_NAME = ".edgeloop-fetched"
FETCH_TIMEOUT_S = 900.0


def distribution_dir(version: str = KAFKA_VERSION, cache_root: Path | None = None) -> Path:
    """``<cache>/kafka-<version>``: the fetched jars (``libs/``) for that Kafka version."""
    return (cache_root if cache_root is not None else cache_dir()) / f"kafka-{version}"


def find_java() -> Path:
    """The ``java`` to run the broker with: ``$JAVA_HOME/bin/java`` if set, else ``java`` on ``PATH``.

    Raises
    ------
    BrokerError
        If there is none, or it is older than Java 17.
    """
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate is None or not candidate.is_file():
        found = shutil.which("java")
        if found is None:
            raise BrokerError(
                "no `java` found (JAVA_HOME unset or without bin/java, and none on PATH): the local Kafka "
                f"broker needs Java {MIN_JAVA_MAJOR} or newer; install one (e.g. `apt-get install "
                "openjdk-17-jre-headless`) or point JAVA_HOME at it"
            )
        candidate = Path(found)
    major = java_major_version(_java_version_output(str(candidate)))
    if major < MIN_JAVA_MAJOR:
        raise BrokerError(
            f"{candidate} is Java {major}, but Kafka {KAFKA_VERSION} needs Java {MIN_JAVA_MAJOR} or newer; "
            "install a newer JDK/JRE and put it first on PATH or in JAVA_HOME"
        )
    return candidate


@functools.lru_cache(maxsize=8)
def _java_version_output(java: str) -> str:
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"could not run `{java} -version`: {exc}; check the Java installation") from exc
    return done.stderr + done.stdout


def java_major_version(version_output: str) -> int:
    """Major Java version from the text ``java -version`` prints.

    Examples
    --------
    >>> java_major_version('openjdk version "17.0.15" 2025-04-15')
    17
    >>> java_major_version('java version "1.8.0_402"')
    8
    >>> java_major_version('openjdk version "21" 2023-09-19')
    21
    """
    match = re.search(r'version "([^"]+)"', version_output)
    if match is None:
        raise BrokerError(f"cannot read a Java version from `java -version` output: {version_output!r}")
    parts = re.split(r"[._+-]", match.group(1))
    try:
        first = int(parts[0])
        return int(parts[1]) if first == 1 and len(parts) > 1 else first
    except ValueError as exc:
        raise BrokerError(f"cannot read a Java version from {match.group(1)!r}") from exc


def _stamp(version: str) -> str:
    return hashlib.sha256(POM.read_bytes() + version.encode()).hexdigest()


def is_fetched(version: str = KAFKA_VERSION, cache_root: Path | None = None) -> bool:
    """Whether the jars for ``version`` are in the cache and were fetched with the current pom."""
    stamp = distribution_dir(version, cache_root) / "libs" / STAMP_NAME
    try:
        return stamp.read_text().strip() == _stamp(version)
    except OSError:
        return False


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch(version: str = KAFKA_VERSION, cache_root: Path | None = None) -> Path:
    """Make sure the broker's jars are cached and return their directory (``.../kafka-<version>/libs``).

    Does nothing when already fetched. Otherwise runs Maven (``mvn`` on ``PATH``), which downloads from
    Maven Central into ``~/.m2`` unless the artifacts are already there. Safe to call from several
    processes at once: one fetches, the others wait for it and reuse the result.

    Raises
    ------
    BrokerError
        If Maven is missing or fails (its last output lines are in the message).
    """
    home = distribution_dir(version, cache_root)
    libs = home / "libs"
    if is_fetched(version, cache_root):
        return libs
    with _locked(home / ".fetch.lock"):
        if is_fetched(version, cache_root):  # another process fetched while we waited for the lock
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError(
                f"Kafka {version} is not in the cache ({libs}) and `mvn` is not on PATH to fetch it: install "
                "Maven (e.g. `apt-get install maven`) and retry; it needs Maven Central once"
            )
        scratch = home / f"libs.partial-{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        command = [
            mvn, "-q", "-B", "-f", str(POM), f"-Dkafka.version={version}",
            "dependency:copy-dependencies", f"-DoutputDirectory={scratch}", "-DincludeScope=runtime",
        ]  # fmt: skip
        log.info("fetching Apache Kafka %s with Maven into %s (once)", version, libs)
        started = time.monotonic()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            raise BrokerError(
                f"fetching Kafka {version} with Maven took over {FETCH_TIMEOUT_S:.0f} s; check that Maven "
                "Central is reachable (or a mirror is set in ~/.m2/settings.xml) and retry"
            ) from exc
        jars = list(scratch.glob("kafka_2.13-*.jar")) if scratch.is_dir() else []
        if done.returncode != 0 or not jars:
            shutil.rmtree(scratch, ignore_errors=True)
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise BrokerError(
                f"Maven could not fetch Kafka {version} (exit {done.returncode}); check that Maven Central "
                f"is reachable and the version exists. Command: {' '.join(command)}\n{tail}"
            )
        (scratch / STAMP_NAME).write_text(_stamp(version) + "\n")
        if libs.exists():  # fetched with an older pom: move it aside so the swap stays atomic
            stale = home / f"libs.stale-{os.getpid()}-{int(time.time())}"
            libs.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        scratch.rename(libs)
        log.info("fetched %d jars in %.1f s", len(list(libs.glob("*.jar"))), time.monotonic() - started)
    return libs
