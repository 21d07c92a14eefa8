"""Build the sandbox images when absent: `manage.py build_images [--test] [--force]`.

The default image comes from docker/Dockerfile. Its base is Debian's official image when a
registry answers; otherwise a base is made locally with debootstrap + `docker import`, so the
panel works on machines that reach only a Debian mirror and the npm registry. `--test` builds
the tiny busybox image the test suite uses instead. An image that exists is reused, unless the
default image was built from another version of docker/Dockerfile (its `io.ccpanel.recipe`
label): then it is rebuilt, so an upgrade of the panel brings its image's hardening along.
"""

import glob
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from sandboxes import engine

DOCKER_DIR = Path(settings.BASE_DIR) / "docker"
OFFICIAL_BASE = "debian:bookworm-slim"
OFFLINE_BASE = "ccpanel/debian-base:bookworm"
TEST_IMAGE = "ccpanel/test-busybox:latest"
LABEL_RECIPE = "io.ccpanel.recipe"
# The test image's command exits promptly on SIGTERM, as tini makes the real image do.
TEST_CMD = 'CMD ["/bin/sh", "-c", "trap \'exit 0\' TERM INT; while :; do sleep 1 & wait $!; done"]'


class Command(BaseCommand):
    help = "Build the default sandbox image (and its base) if it is not there yet."

    def add_arguments(self, parser):
        parser.add_argument("--test", action="store_true", help="build the busybox test image")
        parser.add_argument("--force", action="store_true", help="rebuild even if the image exists")
        parser.add_argument("--tag", default=None, help="image tag (default: SANDBOX_DEFAULT_IMAGE)")

    def handle(self, *args, test, force, tag, **opts):
        self.docker = engine.engine_for()
        try:
            self.docker.ping()
            if test:
                self._ensure_imported(TEST_IMAGE, "build-test-rootfs.sh", [TEST_CMD, "USER 1000:1000", "WORKDIR /workspace"], force)
            else:
                self._build_default(tag or settings.SANDBOX_DEFAULT_IMAGE, force)
        except engine.EngineError as exc:
            raise CommandError(str(exc)) from exc

    def _say(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def _ensure_imported(self, ref: str, script: str, changes: list[str], force: bool = False) -> None:
        if self.docker.image_exists(ref) and not force:
            self._say(f"==> {ref} is present; reusing it")
            return
        with tempfile.TemporaryDirectory(prefix="ccpanel-build-") as tmp:
            tar = Path(tmp) / "rootfs.tar"
            self._say(f"==> building the root filesystem for {ref} ({script})")
            result = subprocess.run(["bash", str(DOCKER_DIR / script), str(tar)], check=False)
            if result.returncode:
                raise CommandError(f"{script} failed (exit {result.returncode}).")
            repository, _, tag = ref.partition(":")
            self.docker.import_image(str(tar), repository=repository, tag=tag or "latest", changes=changes)
        self._say(f"==> imported {ref}")

    def _base_image(self) -> str:
        if self.docker.image_exists(OFFICIAL_BASE):
            return OFFICIAL_BASE
        self._say(f"==> pulling {OFFICIAL_BASE}")
        try:
            self.docker.pull(OFFICIAL_BASE)
            return OFFICIAL_BASE
        except engine.EngineError as exc:
            self._say(f"    no registry answered ({exc}); building a local Debian base instead")
        self._ensure_imported(OFFLINE_BASE, "build-base-rootfs.sh", ['CMD ["/bin/bash"]'])
        return OFFLINE_BASE

    def _build_default(self, ref: str, force: bool) -> None:
        have = self.docker.image_labels(ref)
        if have is not None and not force:
            if have.get(LABEL_RECIPE) == recipe() or have.get("io.ccpanel.image") != "claude-code":
                # Current, or not one the panel built (an admin's own image): reused as it is.
                self._say(f"==> sandbox image {ref} is present; reusing it")
                return
            self._say(f"==> {ref} was built from another docker/Dockerfile; rebuilding it")
        base = self._base_image()
        with tempfile.TemporaryDirectory(prefix="ccpanel-context-") as context:
            shutil.copytree(DOCKER_DIR, context, dirs_exist_ok=True)
            # CAs installed locally on the host (a TLS-inspecting proxy's, say) so that npm inside
            # the build trusts what the host trusts. Public certificates only, no keys.
            for crt in glob.glob("/usr/local/share/ca-certificates/**/*.crt", recursive=True):
                shutil.copy(crt, Path(context) / "extra-ca" / Path(crt).name)
            self._say(f"==> building {ref} from docker/Dockerfile on {base} (several minutes the first time)")
            for line in self.docker.build_image(
                context, tag=ref, buildargs={"BASE_IMAGE": base}, labels={"io.ccpanel.image": "claude-code", LABEL_RECIPE: recipe()}
            ):
                self.stdout.write(line, ending="")
                self.stdout.flush()
        self._say(f"==> built {ref}")


def recipe() -> str:
    """What the default image is built from, as a hash: the Dockerfile's bytes."""
    return hashlib.sha256((DOCKER_DIR / "Dockerfile").read_bytes()).hexdigest()[:16]
