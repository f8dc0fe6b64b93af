"""CPU, memory, swap, file systems, OS, kernel and uptime through psutil, the same on every OS."""

from __future__ import annotations

import platform
from datetime import datetime, timezone

import psutil

from gpustack.schemas.workers import (
    CPUInfo,
    FileSystemInfo,
    KernelInfo,
    MemoryInfo,
    OperatingSystemInfo,
    SwapInfo,
    UptimeInfo,
    WorkerStatus,
)


def _os_info() -> OperatingSystemInfo:
    system = platform.system()
    if system == "Linux":
        try:
            release = platform.freedesktop_os_release()
            return OperatingSystemInfo(
                name=release.get("NAME", "Linux"), version=release.get("VERSION_ID", "")
            )
        except OSError:
            return OperatingSystemInfo(name="Linux", version="")
    if system == "Darwin":
        return OperatingSystemInfo(name="macOS", version=platform.mac_ver()[0])
    if system == "Windows":
        return OperatingSystemInfo(name="Windows", version=platform.version())
    return OperatingSystemInfo(name=system, version=platform.release())


def _filesystems() -> list[FileSystemInfo]:
    result: list[FileSystemInfo] = []
    seen: set[str] = set()
    for partition in psutil.disk_partitions(all=False):
        if partition.mountpoint in seen or partition.fstype in ("squashfs", "tmpfs", "overlay"):
            continue
        seen.add(partition.mountpoint)
        try:
            usage = psutil.disk_usage(partition.mountpoint)
        except OSError:
            continue
        result.append(
            FileSystemInfo(
                mount_point=partition.mountpoint, total=usage.total, used=usage.used, free=usage.free
            )
        )
    return result


def detect_system() -> WorkerStatus:
    memory = psutil.virtual_memory()
    swap = psutil.swap_memory()
    boot = psutil.boot_time()
    uname = platform.uname()
    return WorkerStatus(
        cpu=CPUInfo(
            total=psutil.cpu_count(logical=True) or 0, utilization_rate=psutil.cpu_percent(interval=None)
        ),
        memory=MemoryInfo(
            total=memory.total,
            used=memory.total - memory.available,
            utilization_rate=memory.percent,
            is_unified_memory=platform.system() == "Darwin" and platform.machine() == "arm64",
        ),
        swap=SwapInfo(total=swap.total, used=swap.used),
        filesystem=_filesystems(),
        os=_os_info(),
        kernel=KernelInfo(
            name=uname.system, release=uname.release, version=uname.version, architecture=uname.machine
        ),
        uptime=UptimeInfo(
            uptime=max(0.0, datetime.now(timezone.utc).timestamp() - boot),
            boot_time=datetime.fromtimestamp(boot, timezone.utc).isoformat(),
        ),
    )
