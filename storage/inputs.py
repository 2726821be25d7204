"""Opening one input file safely: what every dataset reader checks before a parser sees a byte.

A dataset folder is untrusted input. Before the bytes of a file reach trimesh, plyfile or NumPy, :func:`read_input`

1. refuses a file name that is not valid UTF-8 (tables, Zarr attributes and the Prefect API are UTF-8; such a
   name could not be recorded or found again) — :class:`~storage.errors.UndecodableFileNameError`;
2. ``stat``\\ s the path (following symbolic links, so a link loop fails at once with ``ELOOP``) and refuses
   anything but a regular file — a FIFO would block ``open`` forever, a device could be endless, a folder named
   ``x.obj`` is no mesh; and, unless ``follow_symlinks`` is set, refuses a symbolic link that resolves outside the
   folder holding it (a link in a dataset folder to ``/etc/passwd``) —
   :class:`~storage.errors.SymlinkOutsideDatasetError`;
3. refuses a file larger than :func:`max_input_bytes` (``BRENIER_MAX_INPUT_BYTES``, default 2 GiB) without
   opening it — :class:`~storage.errors.InputTooLargeError`;
4. reads the first :data:`HEAD_BYTES` and lets a format *sniffer* check them against the file size: magic bytes,
   NUL bytes in a text format, a PLY / NPY / GLB / STL header whose declared data does not fit the file
   (truncated, or padded far beyond it, e.g. a sparse file). Only then is the rest read, never more than the
   limit.

So a 1 GiB sparse file of zeros is rejected after reading 64 KiB. The sniffers return a :class:`FormatProblem`
and the caller turns it into its own typed error (a mesh, collection or scene error naming the item).

Nothing here unpickles: a ``.npy`` header that declares an object dtype is reported as a problem before
``np.load`` sees the file (which the readers call with ``allow_pickle=False`` anyway).
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from storage.errors import InputError, InputTooLargeError, SymlinkOutsideDatasetError, UndecodableFileNameError

__all__ = [
    "DEFAULT_MAX_INPUT_BYTES",
    "HEAD_BYTES",
    "MAX_INPUT_BYTES_ENV",
    "FormatProblem",
    "Sniffer",
    "max_input_bytes",
    "npz_member_problem",
    "obj_face_problem",
    "ply_count_problem",
    "ply_element_counts",
    "printable",
    "read_input",
    "sniff_glb",
    "sniff_npy",
    "sniff_npz",
    "sniff_ply",
    "sniff_stl",
    "sniff_text",
    "sniffer_for",
]

DEFAULT_MAX_INPUT_BYTES: int = 2 * 2**30
"""Largest input file read by default: 2 GiB (a 3DGS scene of ~8.6 M Gaussians at SH degree 3)."""

MAX_INPUT_BYTES_ENV = "BRENIER_MAX_INPUT_BYTES"
"""Environment variable overriding :data:`DEFAULT_MAX_INPUT_BYTES`: bytes, optionally with a ``K``/``M``/``G``
suffix (powers of 1024), e.g. ``512M``. Read at every call, so workers started with it set obey it."""

HEAD_BYTES: int = 64 * 1024
"""Bytes read first and handed to the format sniffer (PLY headers and NPY headers must fit in them)."""

_TRAILING_SLACK = 64 * 1024  # bytes a file may carry beyond twice its declared data before it counts as padded
_SUFFIXES = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class FormatProblem:
    """What a sniffer found wrong with a file's first bytes.

    Attributes
    ----------
    reason : str
        One sentence, without the item id.
    corrupt : bool
        True: the file, named as the expected format, is damaged: no magic bytes, a truncated or padded body, a
        bad header. False: its content is of another kind (binary data in a text format, a pickled object array
        that is refused, an STL that is neither binary nor ASCII).
    """

    reason: str
    corrupt: bool


Sniffer = Callable[[bytes, int], FormatProblem | None]
"""``sniff(head, size)``: the first :data:`HEAD_BYTES` (fewer if the file is shorter) and the file's size in bytes;
returns None when the head is plausible for the format."""


def max_input_bytes() -> int:
    """The input size limit in bytes: ``BRENIER_MAX_INPUT_BYTES`` if set, else :data:`DEFAULT_MAX_INPUT_BYTES`.

    Raises
    ------
    ValueError
        If the variable is set but not a positive size such as ``1073741824``, ``512M`` or ``2GiB``.
    """
    text = os.environ.get(MAX_INPUT_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_INPUT_BYTES
    match = _SIZE.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"{MAX_INPUT_BYTES_ENV}={text!r} is not a positive size (e.g. 1073741824, 512M, 2GiB)")
    return int(match.group(1)) * _SUFFIXES[match.group(2).upper()]


def printable(text: str) -> str:
    """``text`` with the undecodable bytes of a non-UTF-8 file name (Python's surrogate escapes) written as
    ``\\xNN``, so it can go into Parquet, JSON and logs."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a lone surrogate that no file system produced
            return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _size_text(n: int) -> str:
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} bytes"


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def _stat_size(fs: fsspec.AbstractFileSystem, path: str, uri: str, item_id: str, unreadable: type[InputError]) -> int:
    shown = printable(uri)
    if isinstance(fs, LocalFileSystem):
        try:
            st = os.stat(path)  # follows links: a loop raises ELOOP here instead of hanging anywhere later
        except OSError as e:
            if os.path.islink(path):
                what = "a symbolic link loop" if e.errno == errno.ELOOP else "a broken symbolic link"
                raise unreadable(item_id, f"cannot read {shown}: {what} ({e.strerror})") from e
            raise unreadable(item_id, f"cannot read {shown}: {type(e).__name__}: {e.strerror or e}") from e
        if not stat.S_ISREG(st.st_mode):
            raise unreadable(item_id, f"cannot read {shown}: it is {_file_kind(st.st_mode)}, not a regular file")
        return int(st.st_size)
    try:
        info = fs.info(path)
    except Exception as e:  # any filesystem failure is an unreadable item, not a crash of the run
        raise unreadable(item_id, f"cannot read {shown}: {type(e).__name__}: {e}") from e
    if info.get("type") != "file":
        raise unreadable(item_id, f"cannot read {shown}: it is a {info.get('type')}, not a file")
    return int(info.get("size") or 0)


def _link_outside_folder(path: str) -> tuple[str, str] | None:
    """``(resolved target, real folder)`` when the local ``path`` is a symbolic link whose target (all links
    resolved) lies outside the real path of the folder holding the link, else None. Folders above the link are
    not judged: they are the dataset location the user chose."""
    if not os.path.islink(path):
        return None  # a plain entry's real path is inside its folder's real path
    absolute = os.path.abspath(path)
    folder = os.path.realpath(os.path.dirname(absolute))
    target = os.path.realpath(absolute)
    return None if os.path.commonpath([folder, target]) == folder else (target, folder)


def read_input(
    uri: str,
    item_id: str,
    unreadable: type[InputError],
    wrong_format: type[InputError],
    sniff: Sniffer | None = None,
    follow_symlinks: bool = False,
) -> bytes:
    """Read one input file's bytes after the checks of the module docstring.

    Parameters
    ----------
    uri : str
        Local path or fsspec URL.
    item_id : str
        Id of the item the file belongs to; every raised error carries it.
    unreadable : type[InputError]
        Error class for a file that cannot be read, is not a regular file, or that ``sniff`` finds damaged.
    wrong_format : type[InputError]
        Error class for bytes that ``sniff`` finds to be no file of the expected format.
    sniff : Sniffer, optional
        Format check of the first :data:`HEAD_BYTES` (see :func:`sniffer_for`).
    follow_symlinks : bool
        Read a local file that is a symbolic link resolving outside the folder holding the link (its real path
        not inside that folder's real path). False (default): refuse it. Links within the folder (e.g. to a
        sibling or into a sub-folder) are always read; link loops and broken links are refused either way.

    Returns
    -------
    bytes
        The whole file (at most :func:`max_input_bytes` bytes).

    Raises
    ------
    UndecodableFileNameError
        The path is not valid UTF-8.
    SymlinkOutsideDatasetError
        ``follow_symlinks`` is False and the file is a symbolic link resolving outside its folder; the reason
        names the link, its target and the folder (checked after the file type, before anything is read).
    InputTooLargeError
        The file is larger than :func:`max_input_bytes` (checked before opening, and again while reading).
    InputError
        ``unreadable`` or ``wrong_format`` as described above (a directory, FIFO, link loop or broken link is
        ``unreadable``, its reason saying which); the reason names the file.
    """
    shown = printable(uri)
    if shown != uri:
        raise UndecodableFileNameError(
            item_id, f"file name '{shown}' is not valid UTF-8; rename it (e.g. convmv -f latin1 -t utf8)"
        )
    limit = max_input_bytes()
    fs, path = fsspec.core.url_to_fs(uri)
    size = _stat_size(fs, path, uri, item_id, unreadable)
    outside = None if follow_symlinks or not isinstance(fs, LocalFileSystem) else _link_outside_folder(path)
    if outside is not None:
        target, folder = (printable(p) for p in outside)
        raise SymlinkOutsideDatasetError(
            item_id, f"{shown} is a symbolic link to {target}, outside its folder {folder}; "
            "set follow_symlinks (CLI: --follow-symlinks) to read it",
        )
    if size > limit:
        raise InputTooLargeError(
            item_id, f"{shown} has {_size_text(size)} ({size} bytes), more than the input limit of {_size_text(limit)} "
            f"(set {MAX_INPUT_BYTES_ENV} to raise it)",
        )
    try:
        with fs.open(path, "rb") as f:
            head: bytes = f.read(HEAD_BYTES)
            blank = len(head) < HEAD_BYTES and not head.strip()  # the reader reports blank files as empty
            problem = sniff(head, size) if sniff is not None and not blank else None
            if problem is not None:
                raise (unreadable if problem.corrupt else wrong_format)(item_id, f"{shown}: {problem.reason}")
            if len(head) < HEAD_BYTES:
                data = head
            else:
                f.seek(0)  # one read of the whole file, not head + rest (which would copy it once more)
                data = f.read(limit + 1)
    except InputError:
        raise
    except Exception as e:  # any filesystem failure is an unreadable item, not a crash of the run
        raise unreadable(item_id, f"cannot read {shown}: {type(e).__name__}: {e}") from e
    if len(data) > limit:
        raise InputTooLargeError(item_id, f"{shown} grew beyond the input limit of {_size_text(limit)} while read")
    return data


# --- sniffers ----------------------------------------------------------------------------------------------------


def _padded(declared: int, available: int) -> bool:
    return available > 2 * declared + _TRAILING_SLACK


def sniff_text(format_name: str) -> Sniffer:
    """Sniffer of a text format (OBJ, OFF): no NUL byte among the first bytes."""

    def sniff(head: bytes, size: int) -> FormatProblem | None:
        nul = head.find(b"\0")
        if nul >= 0:
            return FormatProblem(f"binary data (a NUL byte at offset {nul}) in a text {format_name} file", False)
        return None

    return sniff


_PLY_SIZES = {
    "char": 1, "int8": 1, "uchar": 1, "uint8": 1, "short": 2, "int16": 2, "ushort": 2, "uint16": 2,
    "int": 4, "int32": 4, "uint": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8,
}  # fmt: skip


def _ply_header(head: bytes) -> tuple[bool, list[list], int] | None:
    """``(binary, [[name, count, fixed row bytes, list props, scalar props, max row bytes], ...], header length)``
    of a PLY head, or None when there is no complete header this parser understands. ``max row bytes`` is None
    when a list's length is not bounded by a one-byte count."""
    end = re.search(rb"\bend_header\r?\n", head)
    if not re.match(rb"ply\r?\n", head) or end is None:
        return None
    binary = None
    elements: list[list] = []
    for line in head[: end.start()].decode("ascii", "replace").splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        try:
            if words[0] == "format":
                binary = words[1] != "ascii"
            elif words[0] == "element":
                elements.append([words[1], int(words[2]), 0, 0, 0, 0])
            elif words[0] == "property" and words[1] == "list":
                count_size, item_size = _PLY_SIZES[words[2]], _PLY_SIZES[words[3]]
                elements[-1][2] += count_size
                elements[-1][3] += 1
                bounded = elements[-1][5] is not None and count_size == 1
                elements[-1][5] = elements[-1][5] + count_size + 255 * item_size if bounded else None
            elif words[0] == "property":
                elements[-1][2] += _PLY_SIZES[words[1]]
                elements[-1][4] += 1
                if elements[-1][5] is not None:
                    elements[-1][5] += _PLY_SIZES[words[1]]
        except (IndexError, KeyError, ValueError):
            return None  # malformed or unknown: the PLY parser gives the precise error
    if binary is None or any(count < 0 for _, count, *_ in elements):
        return None
    return binary, elements, end.end()


def ply_element_counts(head: bytes) -> dict[str, int] | None:
    """Element name -> declared row count of a PLY header (the file's first bytes), or None if unparsable."""
    header = _ply_header(head)
    return None if header is None else {name: count for name, count, *_ in header[1]}


def ply_count_problem(data: bytes, n_vertices: int, n_faces: int) -> str | None:
    """Why a parsed PLY mesh disagrees with its header, or None.

    trimesh reads an ASCII PLY cut at a line boundary without complaint; this compares what it read with the
    header's ``vertex`` count (equal) and ``face`` count (at least as many triangles: polygons are split).
    """
    declared = ply_element_counts(data[:HEAD_BYTES])
    if declared is None:
        return None
    vertices, faces = declared.get("vertex", 0), declared.get("face", 0)
    if n_vertices != vertices or n_faces < faces:
        return (f"truncated or corrupt PLY: its header declares {vertices} vertices and {faces} faces, "
                f"{n_vertices} and {n_faces} were read")
    return None


_OBJ_SHORT_FACE = re.compile(rb"^[ \t]*f(?:[ \t]+\S+){0,2}[ \t\r]*$", re.MULTILINE)
_OBJ_ZERO_INDEX = re.compile(rb"^[ \t]*f(?:[ \t]+\S+)*?[ \t]+[+-]?0+(?:/\S*)?[ \t\r]*(?:$|[ \t])", re.MULTILINE)


def obj_face_problem(data: bytes) -> str | None:
    """Why an OBJ's face lines would be misread by trimesh, or None: a vertex index 0 (OBJ indices start at 1;
    trimesh reads 0 as -1, the last vertex), or a face line with fewer than three vertices (e.g. a file cut
    inside its last line; trimesh then drops every face)."""
    if _OBJ_ZERO_INDEX.search(data):
        return "face index 0 in an OBJ file (OBJ vertex indices start at 1)"
    short = _OBJ_SHORT_FACE.search(data)
    if short:
        line = data.count(b"\n", 0, short.start()) + 1
        return f"OBJ face line {line} has fewer than 3 vertices ({short.group().strip()[:40]!r}; truncated?)"
    return None


def sniff_ply(head: bytes, size: int) -> FormatProblem | None:
    """Sniffer of PLY: ``ply`` magic, a complete header within :data:`HEAD_BYTES`, and element data that fits.

    The header's element counts and property types give the least number of data bytes (binary: row sizes,
    list properties counted with no entries; ASCII: two bytes per value). A file with fewer is truncated. A
    binary file is also refused when it holds more than twice the most its header allows plus
    64 KiB (a padded or sparse file); lists with a one-byte count (as mesh faces) are bounded by 255 entries,
    other lists leave the file unbounded. Headers this parser does not understand are left to the PLY parser.
    """
    if not re.match(rb"ply\r?\n", head):
        return FormatProblem(f"not a PLY file (starts with {head[:16]!r}, expected b'ply\\n')", True)
    if re.search(rb"\bend_header\r?\n", head) is None:
        return FormatProblem(f"no 'end_header' line in the first {min(len(head), HEAD_BYTES)} bytes", True)
    header = _ply_header(head)
    if header is None:
        return None
    binary, elements, header_length = header
    available = size - header_length
    if binary:
        needed = sum(count * row for _, count, row, *_ in elements)
    else:
        needed = sum(count * 2 * (lists + scalars) for _, count, _, lists, scalars, _ in elements)
    if available < needed:
        counts = ", ".join(f"{count} {name}" for name, count, *_ in elements)
        return FormatProblem(
            f"truncated: its header declares {counts}, at least {needed} bytes of data, but {available} follow", True
        )
    most = None if any(row is None for *_, row in elements) else sum(count * row for _, count, *_, row in elements)
    if binary and most is not None and _padded(most, available):
        return FormatProblem(f"{available} bytes follow the header, which declares only {needed}"
                             + ("" if most == needed else f" to {most}"), True)
    return None


def sniff_stl(head: bytes, size: int) -> FormatProblem | None:
    """Sniffer of STL: binary (80-byte header, triangle count, 50 bytes per triangle) or ASCII (``solid``)."""
    if head.lstrip()[:5].lower() == b"solid" and b"\0" not in head:
        return None
    if size < 84 or len(head) < 84:
        return FormatProblem(f"not an STL file: {size} bytes, no 'solid' keyword and no binary STL header", False)
    (count,) = struct.unpack_from("<I", head, 80)
    needed = 84 + 50 * count
    if size < needed:
        return FormatProblem(f"truncated binary STL: {count} triangles need {needed} bytes, the file has {size}", True)
    if _padded(needed, size):
        return FormatProblem(
            f"not an STL file: binary header declares {count} triangles ({needed} bytes) in {size}", False)
    return None


def sniff_glb(head: bytes, size: int) -> FormatProblem | None:
    """Sniffer of binary glTF: ``glTF`` magic and a declared length that fits the file."""
    if len(head) < 12 or head[:4] != b"glTF":
        return FormatProblem(f"not a GLB file (starts with {head[:8]!r}, expected b'glTF')", True)
    (length,) = struct.unpack_from("<I", head, 8)
    if length > size:
        return FormatProblem(f"truncated: its header declares {length} bytes, the file has {size}", True)
    if _padded(length, size):
        return FormatProblem(f"its header declares {length} bytes but the file has {size}", True)
    return None


def _npy_header(head: bytes) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and header length of an NPY stream; raises ValueError on a malformed header."""
    stream = io.BytesIO(head)
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version in ((2, 0), (3, 0)):
        shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    return tuple(shape), dtype, stream.tell()


def _npy_problem(head: bytes, size: int) -> FormatProblem | None:
    try:
        shape, dtype, header_length = _npy_header(head)
    except Exception as e:  # numpy raises ValueError / SyntaxError / EOFError on malformed headers
        return FormatProblem(f"malformed .npy header: {type(e).__name__}: {e}", True)
    if dtype.hasobject:
        return FormatProblem("holds an object array (refused: inputs are never unpickled)", False)
    needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    available = size - header_length
    if available < needed:
        return FormatProblem(
            f"truncated: its header declares a {dtype} array of shape {list(shape)} ({needed} bytes), "
            f"but {available} bytes follow",
            True,
        )
    if _padded(needed, available):
        return FormatProblem(f"{available} bytes follow a header that declares {needed}", True)
    return None


def sniff_npy(head: bytes, size: int) -> FormatProblem | None:
    """Sniffer of ``.npy``: NumPy magic, a parsable header, no object dtype, declared data that fits the file."""
    if not head.startswith(b"\x93NUMPY"):
        return FormatProblem("not a .npy file (no NumPy magic bytes)", True)
    return _npy_problem(head, size)


def sniff_npz(head: bytes, size: int) -> FormatProblem | None:
    """Sniffer of ``.npz``: zip magic (a local file header, or the end record of an empty archive)."""
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06")):
        return FormatProblem("not an .npz file (no zip magic bytes)", True)
    return None


def npz_member_problem(archive: zipfile.ZipFile, name: str, limit: int) -> FormatProblem | None:
    """Check one ``.npy`` member of an ``.npz`` before NumPy loads it: its declared uncompressed size within
    ``limit`` (a zip bomb is refused before it is inflated), a parsable header without object dtype, and
    declared data that fits the member."""
    info = archive.getinfo(name)
    if info.file_size > limit:
        return FormatProblem(
            f"member {name!r} inflates to {_size_text(info.file_size)}, more than the input limit of "
            f"{_size_text(limit)}",
            True,
        )
    try:
        with archive.open(info) as member:
            head = member.read(HEAD_BYTES)
    except Exception as e:  # zlib / CRC / truncated-archive errors
        return FormatProblem(f"cannot read member {name!r}: {type(e).__name__}: {e}", True)
    if not head.startswith(b"\x93NUMPY"):
        return FormatProblem(f"member {name!r} is not a .npy array", True)
    problem = _npy_problem(head, info.file_size)
    return None if problem is None else FormatProblem(f"member {name!r}: {problem.reason}", problem.corrupt)


_SNIFFERS: dict[str, Sniffer] = {
    "obj": sniff_text("OBJ"),
    "off": sniff_text("OFF"),
    "ply": sniff_ply,
    "stl": sniff_stl,
    "glb": sniff_glb,
    "npy": sniff_npy,
    "npz": sniff_npz,
}


def sniffer_for(extension: str) -> Sniffer | None:
    """The sniffer of a lowercase file extension (no dot), or None for formats without one."""
    return _SNIFFERS.get(extension)
