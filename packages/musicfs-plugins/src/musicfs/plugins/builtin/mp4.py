"""MP4 audio (M4A: AAC or ALAC): the metadata overlay for ``.m4a``, ``.m4b``, ``.mp4``.

An MP4 file is a sequence of top-level atoms: ``ftyp``, ``moov`` (the index
of the audio and, in ``moov/udta/meta/ilst``, the tags) and ``mdat`` (the
audio), plus ``free`` and others. The sample tables in ``moov`` locate the
audio by absolute file offsets (``stco``, ``co64``).

The header (`Mp4Format.header_length`) is every top-level atom before the
first ``mdat`` plus that ``mdat``'s own atom header; the payload is the audio
after it. The synthesized header is the same atoms with ``moov`` rewritten:

- the ``ilst`` items of the changed fields are replaced (in the place of the
  first old one) or removed; every other item (cover art, freeform ``----``
  atoms, gapless info...) stays byte for byte. ``udta``/``meta``/``ilst`` are
  created when missing, as iTunes and mutagen make them;
- every chunk offset moves by what the header grew or shrank, so it still
  points at the same audio byte.

Files whose ``moov`` follows the audio (ffmpeg's default) are served with the
rewritten ``moov`` in front, as ``-movflags +faststart`` would lay them out:
the header becomes ``ftyp``..., the new ``moov``, and an ``mdat`` header whose
size now runs to the end of the file. The old ``moov`` (and anything after
the audio) thus lies inside ``mdat``, where no reader looks for atoms: it is
never parsed, only skipped. Writing that header needs the old ``moov`` from the
end of the file, hence `Mp4Format.synthesize_for_file`.

Refused (`NotImplementedError`, see `musicfs.core.content.overlay`): no ``moov`` or no
``mdat``, two ``moov``, fragmented files (``moof``, ``mvex``), atoms whose sizes
do not add up, chunk offsets that do not point past the header, a 32-bit
offset table that would overflow, and a ``moov`` larger than 16 MiB.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar

import mutagen.mp4

from musicfs.core.errors import Signal
from musicfs.core.model import TrackTags
from musicfs.core.tags.reader import UnreadableFile, read_tags
from musicfs.plugins.api import AudioMeta, FormatPlugin, PluginError, RangedRead
from musicfs.plugins.builtin._fields import Value, changed_groups, current_values, wanted_values

# mutagen's MP4 classes have no type hints: use them through Any.
_mp4: Any = mutagen.mp4

_MAX_MOOV = 16 * 1024 * 1024
_MAX_ATOMS = 4096  # top-level atoms; a damaged file must not send us round in circles
_U32 = 0xFFFFFFFF
#: The ``ilst`` items each field group is read from (`musicfs.core.tags.reader`) and
#: written to (the first name).
_ITEMS: dict[tuple[str, ...], tuple[bytes, ...]] = {
    ("title",): (b"\xa9nam",),
    ("artist",): (b"\xa9ART",),
    ("album",): (b"\xa9alb",),
    ("albumartist",): (b"aART",),
    ("genre",): (b"\xa9gen", b"gnre"),
    ("year",): (b"\xa9day",),
    ("track", "tracktotal"): (b"trkn",),
    ("disc", "disctotal"): (b"disk",),
    ("composer",): (b"\xa9wrt",),
    ("lyrics",): (b"\xa9lyr",),
    ("compilation",): (b"cpil",),
}
_UTF8, _IMPLICIT, _INTEGER = 1, 0, 21  # ``data`` atom types
#: The handler a new ``meta`` atom carries (iTunes metadata), as mutagen writes it.
_HDLR = b"\x00" * 8 + b"mdirappl" + b"\x00" * 9
#: Containers on the way from ``moov`` to the chunk offset tables.
_TO_OFFSETS = {b"trak", b"mdia", b"minf", b"stbl"}


class _Refused(Signal, NotImplementedError):
    pass


@dataclass(frozen=True, slots=True)
class _Atom:
    name: bytes
    offset: int  # where it starts in the buffer (or file) it was found in
    header: int  # 8, or 16 with a 64-bit size
    size: int  # header included

    @property
    def end(self) -> int:
        return self.offset + self.size


def _atom_at(read: RangedRead, offset: int, limit: int) -> _Atom:
    head = read(offset, 16)
    if len(head) < 8:
        raise _Refused(f"MP4 atom at byte {offset} is truncated")
    size, name, header = int.from_bytes(head[:4], "big"), head[4:8], 8
    if size == 1:
        if len(head) < 16:
            raise _Refused(f"MP4 atom at byte {offset} is truncated")
        size, header = int.from_bytes(head[8:16], "big"), 16
    elif size == 0:
        size = limit - offset  # the last atom: to the end of the file
    if size < header or offset + size > limit:
        raise _Refused(f"MP4 atom {name!r} at byte {offset} has a wrong size")
    return _Atom(name, offset, header, size)


def _top_atoms(read: RangedRead, size: int, until_mdat: bool) -> list[_Atom]:
    """The file's top-level atoms (up to the first ``mdat`` if *until_mdat*:
    a header holds only its start)."""
    atoms: list[_Atom] = []
    offset = 0
    while offset < size:
        if len(atoms) >= _MAX_ATOMS:
            raise _Refused("too many MP4 atoms")
        if until_mdat and read(offset + 4, 4) == b"mdat":
            head = read(offset, 16)
            header = 16 if head[:4] == b"\x00\x00\x00\x01" else 8
            atoms.append(_Atom(b"mdat", offset, header, header))
            return atoms
        atom = _atom_at(read, offset, size)
        atoms.append(atom)
        offset = atom.end
    return atoms


def _children(data: bytes, start: int, end: int) -> list[_Atom]:
    """The atoms filling ``data[start:end]`` exactly."""
    read = _reader(data)
    found: list[_Atom] = []
    offset = start
    while offset < end:
        atom = _atom_at(read, offset, end)
        found.append(atom)
        offset = atom.end
    return found


def _reader(data: bytes) -> RangedRead:
    return lambda offset, size: data[offset : offset + size]


def _render(name: bytes, payload: bytes) -> bytes:
    if len(payload) + 8 <= _U32:
        return (len(payload) + 8).to_bytes(4, "big") + name + payload
    return b"\x00\x00\x00\x01" + name + (len(payload) + 16).to_bytes(8, "big") + payload


def _body_start(data: bytes, atom: _Atom) -> int:
    """Where a container's children start: ``meta`` is a full box (version, flags)."""
    return atom.offset + atom.header + (4 if atom.name == b"meta" else 0)


def _edit(
    data: bytes, atom: _Atom, path: tuple[bytes, ...], edit: Callable[[bytes | None], bytes]
) -> bytes:
    """The container *atom* of *data*, re-rendered with its descendant at *path*
    replaced by ``edit(old atom bytes)``; a missing one is created (``edit(None)``)."""
    start = _body_start(data, atom)
    kids = _children(data, start, atom.end)
    parts = [data[k.offset : k.end] for k in kids]
    match = next((i for i, k in enumerate(kids) if k.name == path[0]), None)
    if match is None:
        parts.append(_create(path, edit(None)))
    elif len(path) == 1:
        parts[match] = edit(parts[match])
    else:
        parts[match] = _edit(data, kids[match], path[1:], edit)
    return _render(atom.name, data[atom.offset + atom.header : start] + b"".join(parts))


def _create(path: tuple[bytes, ...], leaf: bytes) -> bytes:
    for name in reversed(path[:-1]):
        leaf = _render(
            name, b"\x00" * 4 + _render(b"hdlr", _HDLR) + leaf if name == b"meta" else leaf
        )
    return leaf


def _data_item(name: bytes, kind: int, payload: bytes) -> bytes:
    return _render(name, _render(b"data", kind.to_bytes(4, "big") + bytes(4) + payload))


def _pair(value: Value, total: Value, what: str) -> tuple[int, int]:
    number, count = int(value or 0), int(total or 0)
    if not (0 <= number <= 0xFFFF and 0 <= count <= 0xFFFF):
        raise _Refused(f"MP4 cannot hold the {what} {number}/{count}")
    return number, count


def _items_for(group: tuple[str, ...], wanted: dict[str, Value]) -> list[bytes]:
    """The ``ilst`` items holding *group*'s wanted values (none: removed)."""
    name = _ITEMS[group][0]
    if group in (("track", "tracktotal"), ("disc", "disctotal")):
        number, total = _pair(wanted[group[0]], wanted[group[1]], group[0])
        if not number and not total:
            return []
        pair = bytes(2) + number.to_bytes(2, "big") + total.to_bytes(2, "big")
        return [_data_item(name, _IMPLICIT, pair + (bytes(2) if name == b"trkn" else b""))]
    value = wanted[group[0]]
    if group == ("compilation",):
        return [_data_item(name, _INTEGER, b"\x01")] if value else []
    if value is None or value is False:
        return []
    if group == ("year",) and isinstance(value, int):
        value = f"{value:04d}"  # the reader takes a year from four digits
    return [_data_item(name, _UTF8, str(value).encode("utf-8"))]


def _current_tags(moov: bytes) -> Any:
    """The tags mutagen (and so the catalog) reads from *moov*."""
    fileobj = io.BytesIO(moov)
    try:
        atoms = _mp4.Atoms(fileobj)
        if b"moov.udta.meta.ilst" not in atoms:
            return _mp4.MP4Tags()
        return _mp4.MP4Tags(atoms, fileobj)
    except Exception as exc:  # mutagen's errors for a damaged ilst
        raise _Refused(f"unreadable MP4 tags: {exc}") from None


def _new_ilst(old: bytes | None, meta: TrackTags, groups: list[tuple[str, ...]]) -> bytes:
    wanted = wanted_values(meta)
    items: list[bytes] = []
    if old is not None:
        atom = _atom_at(_reader(old), 0, len(old))
        items = [old[a.offset : a.end] for a in _children(old, atom.header, atom.end)]
    for group in groups:
        names = _ITEMS[group]
        at = next((i for i, item in enumerate(items) if item[4:8] in names), len(items))
        kept = [item for item in items if item[4:8] not in names]
        at -= sum(1 for item in items[:at] if item[4:8] in names)
        items = kept[:at] + _items_for(group, wanted) + kept[at:]
    return _render(b"ilst", b"".join(items))


def _offset_tables(moov: bytes, atom: _Atom, found: list[_Atom]) -> None:
    for kid in _children(moov, atom.offset + atom.header, atom.end):
        if kid.name in _TO_OFFSETS:
            _offset_tables(moov, kid, found)
        elif kid.name in (b"stco", b"co64"):
            found.append(kid)


def _shift_offsets(moov: bytes, delta: int, first_audio: int) -> bytes:
    """*moov* with every chunk offset moved by *delta*; each must point at or
    after *first_audio* (the payload), or the file is refused."""
    top = _children(moov, 0, len(moov))[0]
    tables: list[_Atom] = []
    _offset_tables(moov, top, tables)
    out = bytearray(moov)
    for table in tables:
        width = 4 if table.name == b"stco" else 8
        start = table.offset + table.header + 4  # version and flags
        count = int.from_bytes(moov[start : start + 4], "big")
        if start + 4 + count * width != table.end:
            raise _Refused(f"MP4 {table.name.decode()} table has a wrong size")
        for at in range(start + 4, table.end, width):
            value = int.from_bytes(moov[at : at + width], "big")
            if value < first_audio:
                raise _Refused("an MP4 chunk offset points before the audio")
            value += delta
            if value >= 1 << (8 * width):
                raise _Refused("MP4 chunk offsets would overflow their 32-bit table")
            out[at : at + width] = value.to_bytes(width, "big")
    return bytes(out)


class Mp4Format(FormatPlugin):
    """Reads MP4 audio tags and rewrites ``moov`` (its ``ilst``) for the overlay."""

    name: ClassVar[str] = "mp4"
    version: ClassVar[str] = "1.0.0"
    extensions: ClassVar[tuple[str, ...]] = ("m4a", "m4b", "mp4")

    def parse(self, reader: BinaryIO) -> AudioMeta:
        try:
            return read_tags("track.m4a", reader)
        except UnreadableFile as exc:
            raise PluginError(str(exc)) from None

    def header_length(self, read: RangedRead, size: int) -> int:
        try:
            atoms = self._layout(read, size)
        except _Refused:
            return 0
        mdat = next(a for a in atoms if a.name == b"mdat")
        return mdat.offset + mdat.header

    def synthesize_header(self, meta: TrackTags, original_header: bytes) -> bytes:
        """The new header when ``moov`` is in *original_header*; a file whose
        ``moov`` follows the audio needs `synthesize_for_file`."""
        read, size = _reader(original_header), len(original_header)
        atoms = _top_atoms(read, size, until_mdat=True)
        if atoms[-1].name != b"mdat" or atoms[-1].end != size:
            raise _Refused("not an MP4 header ending where the audio begins")
        moovs = [a for a in atoms if a.name == b"moov"]
        if len(moovs) != 1:
            raise _Refused("the MP4 moov atom follows the audio: the whole file is needed")
        return self._build(
            meta, original_header, atoms, original_header[moovs[0].offset : moovs[0].end], 0
        )

    def synthesize_for_file(
        self, meta: AudioMeta, read: RangedRead, size: int, header_length: int
    ) -> bytes:
        atoms = self._layout(read, size)
        mdat = next(a for a in atoms if a.name == b"mdat")
        if header_length != mdat.offset + mdat.header:
            raise _Refused("the MP4 file changed while its header was read")
        moov = next(a for a in atoms if a.name == b"moov")
        if moov.offset < mdat.offset:
            return self.synthesize_header(meta, read(0, header_length))
        head = read(0, header_length)
        before = [a for a in atoms if a.offset < mdat.offset] + [
            _Atom(b"mdat", mdat.offset, mdat.header, mdat.header)
        ]
        return self._build(meta, head, before, read(moov.offset, moov.size), size)

    @staticmethod
    def _layout(read: RangedRead, size: int) -> list[_Atom]:
        """The top-level atoms of a file this module can overlay, or `_Refused`."""
        atoms = _top_atoms(read, size, until_mdat=False)
        names = [a.name for a in atoms]
        if names.count(b"moov") != 1 or b"mdat" not in names:
            raise _Refused("not an MP4 file with one moov and an mdat atom")
        if b"moof" in names:
            raise _Refused("fragmented MP4 (moof atoms)")
        moov = atoms[names.index(b"moov")]
        if moov.size > _MAX_MOOV:
            raise _Refused("the MP4 moov atom is larger than 16 MiB")
        return atoms

    @staticmethod
    def _build(meta: TrackTags, head: bytes, atoms: list[_Atom], moov: bytes, size: int) -> bytes:
        """The header: *atoms* (those of *head*, up to the ``mdat`` header) with
        *moov* rewritten. Without a ``moov`` among *atoms*, *moov* came from after
        the audio: it goes in front and ``mdat`` runs to the end of the file
        (*size* bytes)."""
        top = _children(moov, 0, len(moov))
        if len(top) != 1 or top[0].name != b"moov":
            raise _Refused("not an MP4 moov atom")
        if any(k.name == b"mvex" for k in _children(moov, top[0].header, len(moov))):
            raise _Refused("fragmented MP4 (mvex)")
        groups = changed_groups(wanted_values(meta), current_values(_current_tags(moov)))
        if not groups:
            return head  # nothing differs: serve the file as it is

        def ilst(old: bytes | None) -> bytes:
            return _new_ilst(old, meta, groups)

        new_moov = _edit(moov, top[0], (b"udta", b"meta", b"ilst"), ilst)
        mdat = atoms[-1]
        length = mdat.offset + mdat.header
        parts = [head[a.offset : a.end] for a in atoms[:-1]]
        at = next((i for i, a in enumerate(atoms[:-1]) if a.name == b"moov"), None)
        if at is None:  # moov after the audio: in front now, the old one inside mdat
            parts.append(b"")
            at, rest = len(parts) - 1, size - length
            if rest + 8 <= _U32:
                mdat_header = (rest + 8).to_bytes(4, "big") + b"mdat"
            else:
                mdat_header = b"\x00\x00\x00\x01mdat" + (rest + 16).to_bytes(8, "big")
        else:
            mdat_header = head[mdat.offset : length]
        parts[at] = new_moov
        delta = sum(map(len, parts)) + len(mdat_header) - length
        parts[at] = _shift_offsets(new_moov, delta, length)
        return b"".join(parts) + mdat_header
