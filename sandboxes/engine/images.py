"""Images: the sandbox images the panel builds, and the snapshots made from sandboxes."""

import json
from collections.abc import Iterator, Sequence

import docker.errors
import requests.exceptions
from django.conf import settings

from .client import LABEL_EVIDENCE, LABEL_INSTANCE, LABEL_UUID, BaseClient, EngineError, NotFound, translate


class ImagesMixin(BaseClient):
    def image_exists(self, ref: str) -> bool:
        return self._inspected(self.api.inspect_image, ref) is not None

    def image_id(self, ref: str) -> str | None:
        """The id ("sha256:...") of the image `ref` names now, or None when there is none."""
        found = self._inspected(self.api.inspect_image, ref)
        return None if found is None else str(found.get("Id") or "")

    def image_labels(self, ref: str) -> dict[str, str] | None:
        """The image's labels, or None when there is no such image."""
        found = self._inspected(self.api.inspect_image, ref)
        return None if found is None else found.get("Config", {}).get("Labels") or {}

    def pull(self, ref: str) -> None:
        repo, _, tag = ref.partition(":")
        self.call(self.api.pull, repo, tag=tag or "latest")

    def import_image(self, tar_path: str, *, repository: str, tag: str, changes: list[str]) -> None:
        """`docker import` a root filesystem tarball as an image."""
        self.call(self.api.import_image_from_file, tar_path, repository=repository, tag=tag, changes=changes)

    def build_image(self, context_dir: str, *, tag: str, buildargs: dict[str, str], labels: dict[str, str]) -> Iterator[str]:
        """Build an image, yielding its progress lines; raise EngineError if a step fails."""
        stream = self.call(
            self.api.build, path=context_dir, tag=tag, buildargs=buildargs, labels=labels, rm=True, forcerm=True, decode=True
        )
        try:
            for chunk in stream:
                if "error" in chunk:
                    raise EngineError(chunk["error"].strip())
                if text := chunk.get("stream"):
                    yield text
        except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
            raise translate(exc, self.host) from exc

    def remove_images(self, *, sandbox_uuid: str) -> list[str]:
        """Remove every image made from this sandbox (its snapshots: `docker commit` keeps the
        container's labels, UUID included); never one kept as evidence. Returns the ids."""
        removed = []
        labels = [f"{LABEL_UUID}={sandbox_uuid}", f"{LABEL_INSTANCE}={settings.PANEL_INSTANCE}"]
        for image in self.call(self.api.images, filters={"label": labels}):
            if LABEL_EVIDENCE in (image.get("Labels") or {}):
                continue
            try:
                self.call(self.api.remove_image, image["Id"], force=True)
                removed.append(image["Id"])
            except NotFound:
                pass
        return removed

    def given_environment(self, data: dict) -> list[str]:
        """The names of the variables a container (its `docker inspect`) was given beyond its
        image's own: the panel's, secrets among them."""
        try:
            image_env = set(self.call(self.api.inspect_image, data["Image"]).get("Config", {}).get("Env") or [])
        except NotFound:
            image_env = set()
        return sorted({item.partition("=")[0] for item in (data.get("Config") or {}).get("Env") or [] if item not in image_env})

    def commit_evidence(self, container_id: str, *, repository: str, tag: str, incident: str, clear_env: Sequence[str] = ()) -> str:
        """Keep the container's filesystem as an image labelled as evidence of `incident` (the
        container's own labels, its sandbox's UUID among them, are kept). Returns the image id;
        an image already made for this incident is returned instead of a second one.

        `docker commit` when the container was given no variables beyond its image's; otherwise
        its filesystem is exported and imported as a new image: a commit would keep the
        container's whole configuration, secrets' values included, in the image's metadata."""
        found = self.call(self.api.images, filters={"label": [f"{LABEL_EVIDENCE}={incident}"]})
        if found:
            return found[0]["Id"]
        if not clear_env:
            result = self.call(
                self.api.commit,
                container_id,
                repository=repository,
                tag=tag,
                message=f"evidence of incident {incident}",
                changes=[f"LABEL {LABEL_EVIDENCE}={incident}"],
                pause=True,
            )
            return result["Id"]
        labels = {**(self.call(self.api.inspect_container, container_id)["Config"].get("Labels") or {}), LABEL_EVIDENCE: incident}
        changes = [f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in labels.items()]
        stream = self.call(self.api.export, container_id)
        self.call(self.api.import_image, src=stream, repository=repository, tag=tag, changes=changes, stream_src=True)
        return self.call(self.api.inspect_image, f"{repository}:{tag}")["Id"]
