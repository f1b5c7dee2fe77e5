"""Resolve the broker and registry runtimes from Maven Central into a per-user cache, once."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from consentgate.errors import ClusterError

# Kafka's POMs leave out the SLF4J binding; without it the broker logs nothing.
LOG4J_VERSION = "2.24.3"

_KAFKA_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>consentgate.embedded</groupId><artifactId>kafka-runtime</artifactId>
  <version>1</version><packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_COMPLETE = ".complete"


def require_tools() -> None:
    """Fail with one line that says what to install when java or mvn is missing."""
    for tool, package in (("java", "a Java 17+ runtime (e.g. apt-get install openjdk-17-jre-headless)"),
                          ("mvn", "Apache Maven (e.g. apt-get install maven)")):
        if shutil.which(tool) is None:
            raise ClusterError(f"`{tool}` not found on PATH: install {package}")


def _mvn(args: list[str], cwd: Path, what: str) -> None:
    print(f"consentgate: resolving {what} with Maven (first run only)...", file=sys.stderr, flush=True)
    proc = subprocess.run(["mvn", "-B", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        raise ClusterError(f"Maven could not resolve {what}:\n{tail}")
    downloads = sum(1 for line in proc.stdout.splitlines() if line.startswith("Downloaded from"))
    print(f"consentgate: {what} ready ({downloads} artifacts downloaded)", file=sys.stderr, flush=True)


def kafka_classpath(cache_dir: Path, version: str) -> Path:
    """Return a directory of jars that runs ``kafka.Kafka`` for ``version``."""
    home = cache_dir / f"kafka-{version}"
    lib = home / "lib"
    if (home / _COMPLETE).exists():
        return lib
    require_tools()
    home.mkdir(parents=True, exist_ok=True)
    (home / "pom.xml").write_text(_KAFKA_POM.format(kafka=version, log4j=LOG4J_VERSION))
    shutil.rmtree(lib, ignore_errors=True)
    _mvn(["dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={lib}"],
         home, f"Apache Kafka {version}")
    (home / _COMPLETE).touch()
    return lib


def apicurio_runner(cache_dir: Path, version: str) -> Path:
    """Return the path of Apicurio Registry's runnable ``-runner.jar`` for ``version``."""
    home = cache_dir / f"apicurio-{version}"
    runner = home / f"apicurio-registry-app-{version}-runner.jar"
    if (home / _COMPLETE).exists():
        return runner
    require_tools()
    home.mkdir(parents=True, exist_ok=True)
    archive = home / f"apicurio-registry-app-{version}-all.tar.gz"
    if not archive.exists():
        # The app's parent POM is not always served: fetch the archive alone.
        _mvn(["dependency:copy", f"-Dartifact=io.apicurio:apicurio-registry-app:{version}:tar.gz:all",
              f"-DoutputDirectory={home}", "-Dmdep.useBaseVersion=true", "-Dtransitive=false"],
             home, f"Apicurio Registry {version}")
    with tarfile.open(archive) as tar:
        tar.extractall(home, filter="data")
    if not runner.exists():
        raise ClusterError(f"{archive.name} holds no {runner.name}")
    archive.unlink()
    (home / _COMPLETE).touch()
    return runner
