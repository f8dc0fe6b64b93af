"""A worker's model files: one download per cache key however many instances wait for it, one copy on disk
shared by every gpustack process on the machine, a limit on concurrent downloads, and the progress as a
ModelFile on the server, in the waiting instances' state messages and in the worker's log."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpustack.schemas.model_files import ModelFileClaim, ModelFileState, ModelFileStateUpdate
from gpustack.schemas.models import ModelSpec
from gpustack.sources.base import FileSet, SourceError, SourceSettings
from gpustack.sources.registry import SOURCE_FIELDS, source_of
from gpustack.utils.errors import describe_error
from gpustack.utils.units import format_bytes
from gpustack.worker.engines.file_lock import FileLock
from gpustack.worker.files import cache
from gpustack.worker.files.download import Cancelled, DownloadError, Progress, client, download_file

logger = logging.getLogger(__name__)

MAX_CONCURRENT_DOWNLOADS = 3
REPORT_EVERY_SECONDS = 1.0
LOG_EVERY_SECONDS = 5.0
# Kept free beyond the files themselves, so that a download does not fill the disk to the last byte.
SPACE_MARGIN = 64 * 1024 * 1024

Listener = Callable[[str], Awaitable[None]]


class FilesUnavailable(Exception):
    """The model's files could not be made ready here; the message says why and what to do."""


@dataclass
class _Download:
    key: str
    what: str
    task: asyncio.Task[cache.Manifest] | None = None
    listeners: set[Listener] = field(default_factory=set)
    progress: Progress = field(default_factory=Progress)
    file_id: int | None = None


@dataclass(frozen=True)
class DownloadInProgress:
    """A running download as the worker's metrics show it."""

    what: str  # the source's description of the model (repository and file pattern, Ollama name, ...)
    done: int  # bytes on disk
    total: int  # bytes in all, once the files are listed (0 before)


def source_fields(spec: ModelSpec) -> dict[str, Any]:
    return {"source": spec.source.value, **{name: getattr(spec, name) for name in SOURCE_FIELDS}}


class FileManager:
    def __init__(self, cache_dir: str, settings: SourceSettings, server: Any) -> None:
        self.cache_dir = cache_dir
        self.settings = settings
        self._server = server  # ServerClient: claim_model_file, report_model_file
        self._downloads: dict[str, _Download] = {}
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_DOWNLOADS)

    def downloading(self, key: str) -> bool:
        return key in self._downloads

    def in_progress(self) -> list[DownloadInProgress]:
        return [
            DownloadInProgress(d.what, d.progress.done, d.progress.total) for d in self._downloads.values()
        ]

    async def ensure(
        self, spec: ModelSpec, model_id: int, listener: Listener | None = None
    ) -> cache.Manifest:
        """The model's files, complete in the cache: downloaded now, or by a download already running."""
        source = source_of(spec.source)
        key = source.cache_key(spec)
        if key is None:
            raise FilesUnavailable(f"{source.describe(spec)} is not downloaded")
        download = self._downloads.get(key)
        if download is None:
            download = _Download(key, source.describe(spec))
            self._downloads[key] = download
            download.task = asyncio.create_task(self._run(download, spec, model_id), name=f"download {key}")
            download.task.add_done_callback(functools.partial(self._forget, key, download))
        if listener is not None:
            download.listeners.add(listener)
        assert download.task is not None
        try:
            return await asyncio.shield(download.task)
        finally:
            if listener is not None:
                download.listeners.discard(listener)

    def _forget(self, key: str, download: _Download, _task: object = None) -> None:
        if self._downloads.get(key) is download:
            del self._downloads[key]

    def cancel(self, key: str) -> None:
        download = self._downloads.get(key)
        if download is not None:
            download.progress.cancelled.set()

    async def shutdown(self) -> None:
        for download in list(self._downloads.values()):
            download.progress.cancelled.set()
        tasks = [d.task for d in self._downloads.values() if d.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def remove(self, key: str) -> list[str]:
        """Delete a key's files from disk (a running download of it is stopped first)."""
        self.cancel(key)
        download = self._downloads.get(key)
        if download is not None and download.task is not None:
            await asyncio.gather(download.task, return_exceptions=True)
        async with FileLock(cache.lock_path(self.cache_dir, key)).acquire():
            removed = await asyncio.to_thread(cache.remove, self.cache_dir, key)
        logger.info("removed the model files of %s: %d file(s)", key, len(removed))
        return removed

    # ---- one download

    async def _tell(self, download: _Download, message: str) -> None:
        for listener in list(download.listeners):
            with contextlib.suppress(Exception):  # a listener's failure is its instance's business
                await listener(message)

    async def _report(self, download: _Download, update: ModelFileStateUpdate) -> None:
        if download.file_id is None:
            return
        try:
            await self._server.report_model_file(download.file_id, update)
        except Exception as exc:  # noqa: BLE001 - the file's state is shown again at the next report
            logger.debug("could not report model file %s: %s", download.key, describe_error(exc))

    async def _claim(self, download: _Download, spec: ModelSpec, model_id: int) -> None:
        claim = ModelFileClaim.model_validate({**source_fields(spec), "model_id": model_id})
        try:
            row = await self._server.claim_model_file(claim)
            download.file_id = int(row["id"])
        except Exception as exc:  # noqa: BLE001 - the download itself does not need the server
            logger.warning("could not record the model files of %s on the server: %s", download.key, exc)

    async def _fail(self, download: _Download, message: str) -> FilesUnavailable:
        logger.warning("model files %s: %s", download.what, message)
        progress = download.progress
        await self._report(
            download,
            ModelFileStateUpdate(
                state=ModelFileState.ERROR,
                state_message=message,
                size=progress.total or None,
                downloaded_bytes=max(progress.done, 0),
            ),
        )
        return FilesUnavailable(message)

    async def _ready(self, download: _Download, manifest: cache.Manifest) -> cache.Manifest:
        paths = [manifest.main or manifest.folder]
        await self._report(
            download,
            ModelFileStateUpdate(
                state=ModelFileState.READY,
                size=manifest.size,
                downloaded_bytes=manifest.size,
                download_progress=100.0,
                resolved_paths=paths,
            ),
        )
        return manifest

    async def _run(self, download: _Download, spec: ModelSpec, model_id: int) -> cache.Manifest:
        await self._claim(download, spec, model_id)
        key = download.key
        found = await asyncio.to_thread(cache.read_manifest, self.cache_dir, key)
        if found is not None:
            return await self._ready(download, found)

        async def waiting() -> None:
            await self._tell(download, f"waiting for another process downloading {download.what}")

        async with FileLock(cache.lock_path(self.cache_dir, key)).acquire(on_wait=waiting):
            found = await asyncio.to_thread(cache.read_manifest, self.cache_dir, key)
            if found is not None:  # another gpustack process finished it while we waited
                return await self._ready(download, found)
            try:
                source = source_of(spec.source)
                files = await asyncio.to_thread(source.file_set, spec, self.settings, spec.backend.value)
            except SourceError as exc:
                raise await self._fail(download, str(exc)) from None
            if self._slots.locked():
                slots = MAX_CONCURRENT_DOWNLOADS
                await self._tell(download, f"waiting for a download slot ({slots} downloads at a time)")
            async with self._slots:
                manifest = await self._transfer(download, files)
        return await self._ready(download, manifest)

    async def _transfer(self, download: _Download, files: FileSet) -> cache.Manifest:
        folder = cache.folder_of(self.cache_dir, download.key)
        names = [f.name for f in files.files]
        progress = download.progress
        progress.total = files.total_bytes
        try:
            await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
            have = await asyncio.to_thread(cache.bytes_on_disk, folder, names)
            free = await asyncio.to_thread(cache.free_bytes, folder)
        except OSError as exc:
            raise await self._fail(download, f"cannot use the cache folder {folder}: {exc}") from None
        needed = max(files.total_bytes - have, 0)
        if needed + SPACE_MARGIN > free:
            raise await self._fail(
                download,
                f"not enough disk space for {download.what}: it needs {format_bytes(needed)} more "
                f"({format_bytes(files.total_bytes)} in all) and {folder} has {format_bytes(free)} free; "
                "free some space (Resources → Model Files) or move the cache with --cache-dir",
            )
        logger.info(
            "downloading %s into %s: %d file(s), %s (%s already here)",
            download.what,
            folder,
            len(names),
            format_bytes(files.total_bytes),
            format_bytes(have),
        )
        work = asyncio.create_task(asyncio.to_thread(self._fetch_all, files, folder, progress))
        await self._watch(download, work)
        try:
            await work
        except Cancelled:
            raise FilesUnavailable(f"the download of {download.what} was stopped") from None
        except (DownloadError, OSError) as exc:
            message = describe_error(exc) if isinstance(exc, OSError) else str(exc)
            raise await self._fail(download, f"downloading {download.what} failed: {message}") from None
        for name, text in files.extra_files.items():
            await asyncio.to_thread((folder / name).write_text, text)
        written = set(names) | set(files.extra_files)
        parameters = [str(folder / p) if p in written else p for p in files.parameters]
        manifest = cache.Manifest(
            key=download.key,
            folder=str(folder),
            files=names,
            main=str(folder / files.main) if files.main else str(folder),
            parameters=parameters,
            size=files.total_bytes,
        )
        await asyncio.to_thread(cache.write_manifest, self.cache_dir, manifest)
        logger.info("downloaded %s (%s fetched)", download.what, format_bytes(progress.fetched))
        return manifest

    def _fetch_all(self, files: FileSet, folder: Path, progress: Progress) -> None:
        environ = self.settings.environ
        with client(environ) as http:
            for file in files.files:
                target = folder / file.name
                target.parent.mkdir(parents=True, exist_ok=True)
                download_file(file, target, http, progress, environ)

    async def _watch(self, download: _Download, work: asyncio.Task[None]) -> None:
        """Report progress until the transfer ends."""
        progress = download.progress
        last_time, last_fetched, last_log = time.monotonic(), progress.fetched, 0.0
        while not work.done():
            await asyncio.wait({work}, timeout=REPORT_EVERY_SECONDS)
            now = time.monotonic()
            speed = int((progress.fetched - last_fetched) / max(now - last_time, 1e-6))
            last_time, last_fetched = now, progress.fetched
            percent = 100.0 * progress.done / progress.total if progress.total else 0.0
            percent = min(max(percent, 0.0), 100.0)
            words = (
                f"downloading {download.what}: {percent:.0f}% ({format_bytes(progress.done)} of "
                f"{format_bytes(progress.total)}, {format_bytes(speed)}/s)"
            )
            if now - last_log >= LOG_EVERY_SECONDS:
                logger.info("%s", words)
                last_log = now
            await self._tell(download, words)
            await self._report(
                download,
                ModelFileStateUpdate(
                    state=ModelFileState.DOWNLOADING,
                    state_message=words,
                    size=progress.total or None,
                    downloaded_bytes=max(progress.done, 0),
                    download_speed=max(speed, 0),
                    download_progress=percent,
                ),
            )
