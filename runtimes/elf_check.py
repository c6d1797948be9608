"""A shared library's ELF structure checked before the dynamic loader maps it: a truncated or
edited file whose segments reach past its end would be mapped anyway and kill the process with
SIGBUS on first access, instead of failing to load."""

from __future__ import annotations

import struct
from pathlib import Path

from edgegen.core.errors import ArtifactError

ELF_MAGIC = b"\x7fELF"


def check_elf(path: str | Path, component: str) -> None:
    """Raise ArtifactError unless every segment of the ELF file at `path` lies inside the file.
    Files of other formats (Mach-O, a tar of objects) are left to their loader."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(64)
        if not head.startswith(ELF_MAGIC):
            return
        where = f"component {component!r}: the library {path}"
        if len(head) < 64 or head[4] not in (1, 2) or head[5] not in (1, 2):
            raise ArtifactError(f"{where} has a damaged ELF header; copy the artifact again or rebuild it.")
        is64, order = head[4] == 2, "<" if head[5] == 1 else ">"
        if is64:
            phoff, = struct.unpack_from(order + "Q", head, 32)
            phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
            entry = order + "IIQQQQQQ"      # type, flags, offset, vaddr, paddr, filesz, memsz, align
        else:
            phoff, = struct.unpack_from(order + "I", head, 28)
            phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
            entry = order + "IIIIIIII"      # type, offset, vaddr, paddr, filesz, memsz, flags, align
        if phentsize < struct.calcsize(entry) or phnum == 0 or phoff + phnum * phentsize > size:
            raise ArtifactError(f"{where}: its program headers lie outside the file ({size} bytes); it is truncated "
                                f"or damaged. Copy the artifact again or rebuild it.")
        f.seek(phoff)
        table = f.read(phnum * phentsize)
    for i in range(phnum):
        fields = struct.unpack_from(entry, table, i * phentsize)
        offset, filesz = (fields[2], fields[5]) if is64 else (fields[1], fields[4])
        if offset + filesz > size:
            raise ArtifactError(f"{where}: segment {i} ends at byte {offset + filesz}, past the file's {size}; it is "
                                f"truncated or damaged. Copy the artifact again or rebuild it.")
