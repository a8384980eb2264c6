"""The libraries the benchmark runs on, made once and cached under results/cache/.

* `synthetic_catalog` — a MusicFS catalog of N tracks whose origin files do not
  exist (mount time, memory, big trees). Up to ``layout_max`` tracks it is built
  through the product's own `Layout` (and its rate is recorded); above that, rows
  are bulk-inserted with SQL in exactly the shape `Layout` makes (the two are
  compared row for row before a big catalog is built, and by a test:
  packages/musicfs-core/tests/catalog/test_bench_catalog.py), because placing a
  million tracks one by one takes minutes.
* `bench_library` — real (empty) files plus one big file on local disk, and a
  catalog that maps them with the template ``$genre/$albumartist/$album/$title.$format``
  chosen so that every virtual path equals the origin's relative path: direct
  disk, mergerfs, rclone and MusicFS are then asked for the very same paths.
* `scan_library` — N real audio files of real size (3.5-minute FLAC and MP3 made
  by ffmpeg, a few MB each, tagged with mutagen) for the scan rate.

Each directory has a ``meta.json`` written last; a directory without it (an
interrupted build) or with another `DATA_VERSION` is rebuilt.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

DATA_VERSION = 4
MTIME_NS = 1_700_000_000_000_000_000
BENCH_TEMPLATE = "$genre/$albumartist/$album/$title.$format"
TRACKS_PER_ALBUM = 10
ALBUMS_PER_ARTIST = 10


def _load_meta(directory: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if meta.get("version") == DATA_VERSION else None


def _fresh(directory: Path) -> None:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)


def _write_meta(directory: Path, meta: dict[str, Any]) -> dict[str, Any]:
    meta = {"version": DATA_VERSION, **meta}
    (directory / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def _set_layout_settings(catalog: Any, template: str) -> None:
    """Store what the daemon compares with its config, so it does not rebuild the tree."""
    from musicfs.core.catalog.layout import TEMPLATE_SETTING
    from musicfs.core.mount.service import LAYOUT_SETTING

    catalog.set_setting(TEMPLATE_SETTING, template)
    catalog.set_setting(LAYOUT_SETTING, "False")


def _migrate(db: Path, log: Any) -> None:
    """Bring a cached catalog to the product's schema now, not during a measured mount."""
    from musicfs.core.catalog.store import SCHEMA_VERSION, Catalog

    conn = sqlite3.connect(db)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.close()
    if version != SCHEMA_VERSION:
        log(f"migrating cached catalog {db} from schema {version} to {SCHEMA_VERSION} ...")
        Catalog.open(db).close()
    pack_listings(db)  # those the migration (or a mount's changes) left marked


def pack_listings(db: Path) -> None:
    """Pack the listings of the catalog's big folders, as the end of a scan does
    (the bench's catalogs are built without one, and mounted without scanning)."""
    from musicfs.core.catalog.store import Catalog

    with Catalog.open(db) as cat:
        cat.pack_listings()


#: SQL undoing each catalog migration since the oldest MusicFS the bench
#: compares with ("before"). Each of them only added, so what is left is the
#: catalog as that version wrote it.
UNDO_MIGRATION = {
    16: "DROP TRIGGER nodes_listing_insert; DROP TRIGGER nodes_listing_delete;"
    " DROP TRIGGER nodes_listing_update; DROP TABLE listings;",
}


def catalog_schema_of(command: str) -> int | None:
    """The catalog schema the ``musicfs`` *command* (of a virtualenv) reads; None
    if its Python does not say."""
    python = Path(command).parent / "python"
    code = "from musicfs.core.catalog.schema import SCHEMA_VERSION as v; print(v)"
    try:
        done = subprocess.run(
            [python, "-c", code], check=False, capture_output=True, text=True, timeout=60
        )
        return int(done.stdout.strip()) if done.returncode == 0 else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def copy_cache(source: Path, target: Path, schema: int | None) -> None:
    """A copy of MusicFS cache dir *source* at *target*, its catalog taken back
    to *schema* (None: as it is) for an older MusicFS to mount."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("lock", "*.sock"))
    db = target / "catalog.sqlite3"
    if schema is None or not db.exists():
        return
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        while version > schema:
            if version not in UNDO_MIGRATION:
                raise RuntimeError(
                    f"cannot take catalog {db} back from schema {version} to {schema}: "
                    "compare with a newer --before, or add its step to UNDO_MIGRATION"
                )
            version -= 1
            conn.executescript(
                f"BEGIN; {UNDO_MIGRATION[version + 1]}; PRAGMA user_version = {version}; COMMIT;"
            )
    finally:
        conn.close()


# -- synthetic catalogs ----------------------------------------------------------


def synthetic_tags(i: int) -> tuple[str, Any]:
    """(origin relpath, TrackTags) of synthetic track *i*: 10 tracks/album, 10 albums/artist."""
    from musicfs.core.model import TrackTags

    a, b, t = i // 100, (i // 10) % 10, i % 10 + 1
    artist, album, title = f"Artist {a:05d}", f"Album {b:02d}", f"Song {i:07d}"
    tags = TrackTags(title=title, artist=artist, album=album, year=1970 + a % 50, track=t)
    return f"{artist}/{album}/{t:02d} - {title}.flac", tags


def synthetic_virtual_path(i: int) -> str:
    a, b, t = i // 100, (i // 10) % 10, i % 10 + 1
    return f"Artist {a:05d}/Album {b:02d} ({1970 + a % 50}) [FLAC]/{t:02d} - Song {i:07d}.flac"


def synthetic_catalog(
    cache_root: Path, n: int, *, layout_max: int, log: Any = print
) -> dict[str, Any]:
    """A cache dir holding catalog.sqlite3 with *n* tracks, and an empty origin dir ``lib``."""
    directory = cache_root / f"synthetic-{n}"
    meta = _load_meta(directory)
    if meta is not None:
        _migrate(Path(meta["cache_dir"]) / "catalog.sqlite3", log)
        return {**meta, "dir": str(directory), "cached": True}
    _fresh(directory)
    origin = directory / "lib"
    origin.mkdir()
    cache_dir = directory / "cache"
    method = "layout" if n <= layout_max else "bulk-sql"
    if method == "bulk-sql":
        problem = bulk_matches_layout(directory)
        if problem is not None:
            log(f"  [warn] the SQL bulk insert no longer matches Layout ({problem}); using Layout")
            method = "layout"
    log(f"building a synthetic catalog of {n:,} tracks ({method}) in {cache_dir} ...")
    started = time.perf_counter()
    if method == "layout":
        _synthetic_via_layout(cache_dir / "catalog.sqlite3", origin, n)
    else:
        _synthetic_via_sql(cache_dir / "catalog.sqlite3", origin, n)
    pack_listings(cache_dir / "catalog.sqlite3")
    seconds = time.perf_counter() - started
    _verify_catalog(
        cache_dir / "catalog.sqlite3", n, [synthetic_virtual_path(i) for i in _sample(n)]
    )
    size = (cache_dir / "catalog.sqlite3").stat().st_size
    log(
        f"  {n:,} tracks in {seconds:.1f} s ({n / seconds:,.0f} tracks/s), "
        f"catalog {size / 2**20:.0f} MiB"
    )
    return {
        **_write_meta(
            directory,
            {
                "tracks": n,
                "method": method,
                "build_seconds": round(seconds, 3),
                "build_tracks_per_second": round(n / seconds),
                "catalog_bytes": size,
                "origin": str(origin),
                "cache_dir": str(cache_dir),
            },
        ),
        "dir": str(directory),
        "cached": False,
    }


def _sample(n: int, k: int = 500) -> list[int]:
    rng = random.Random(n)
    return sorted({0, n - 1, *(rng.randrange(n) for _ in range(k))})


def _synthetic_via_layout(db: Path, origin: Path, n: int) -> None:
    from musicfs.core.catalog.layout import Layout
    from musicfs.core.catalog.store import Catalog
    from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate

    with Catalog.open(db) as cat:
        cat.register_origin("lib", "local", str(origin))
        layout = Layout(cat, PathTemplate.parse(DEFAULT_TEMPLATE))
        for start in range(0, n, 10_000):
            with cat.transaction():
                for i in range(start, min(n, start + 10_000)):
                    sf = _synthetic_file(i)
                    layout.place(cat.upsert_file(sf), sf.relpath, sf.format, sf.tags)
        _set_layout_settings(cat, DEFAULT_TEMPLATE)


def _synthetic_file(i: int) -> Any:
    """Synthetic track *i* as the scanner reports it (a `ScannedFile`)."""
    from musicfs.core.model import FileStat, ScannedFile

    rel, tags = synthetic_tags(i)
    return ScannedFile("lib", rel, FileStat(20_000_000 + i, MTIME_NS), "flac", tags)


def _synthetic_via_sql(db: Path, origin: Path, n: int) -> None:
    """The rows `Layout.place` would make, inserted in bulk (same ids, same order).

    Every value comes from the product's own functions (`TrackTags.as_row`,
    `replica_key`, `content_version`); the names of the folders are written
    here and checked against `PathTemplate.render`. Each column of the live
    schema must be one this function fills (else `SchemaDrift`), and
    `bulk_matches_layout` (also run by a test, tests of the catalog) compares
    the result with `Layout`'s, row for row.
    """
    from musicfs.core.catalog.layout import content_version
    from musicfs.core.catalog.rows import replica_key
    from musicfs.core.catalog.store import ROOT_NODE, Catalog
    from musicfs.core.catalog.templates import DEFAULT_TEMPLATE, PathTemplate
    from musicfs.core.model import TAG_FIELDS

    template = PathTemplate.parse(DEFAULT_TEMPLATE)
    for i in _sample(n, 200):  # the names below are what the template renders
        rel, tags = synthetic_tags(i)
        assert "/".join(template.render(tags, rel, "flac")) == synthetic_virtual_path(i), i
    with Catalog.open(db) as cat:
        cat.register_origin("lib", "local", str(origin))
        _set_layout_settings(cat, DEFAULT_TEMPLATE)
    file_cols = (
        "id", "origin", "reldir", "name", "size", "mtime_ns", "ctime_ns", "format", "error",
        "scanned_at", "replica_key", "content_hash", "audio_id", *TAG_FIELDS,
    )  # fmt: skip
    node_cols = ("id", "parent", "name", "file_id", "size", "mtime_ns", "replica_key", "version")
    conn = sqlite3.connect(db, isolation_level=None)
    _check_columns(conn, "files", file_cols)
    _check_columns(conn, "nodes", node_cols)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -262144")
    file_sql = (
        f"INSERT INTO files ({', '.join(file_cols)}) VALUES ({', '.join('?' * len(file_cols))})"
    )
    node_sql = (
        f"INSERT INTO nodes ({', '.join(node_cols)}) VALUES ({', '.join('?' * len(node_cols))})"
    )
    now = time.time()
    # Layout gives a new folder the time it was made, and moves the root's mtime
    # on (`touch_dir`): a time of the build, whatever it is exactly.
    dir_mtime = time.time_ns()
    files: list[tuple[Any, ...]] = []
    nodes: list[tuple[Any, ...]] = []
    next_node = ROOT_NODE + 1
    artist_node = album_node = 0
    conn.execute("BEGIN")
    for i in range(n):
        sf = _synthetic_file(i)
        a, b, t = i // 100, (i // 10) % 10, i % 10 + 1
        fid, key = i + 1, replica_key(sf)
        reldir, _, name = sf.relpath.rpartition("/")
        files.append(
            (fid, sf.origin, reldir, name, sf.stat.size, sf.stat.mtime_ns, sf.stat.ctime_ns,
             sf.format, sf.error, now, key, None, sf.audio_id, *sf.tags.as_row())
        )  # fmt: skip
        if i % 100 == 0:
            artist_node = next_node
            nodes.append((artist_node, ROOT_NODE, f"Artist {a:05d}", None, 0, dir_mtime, None, 0))
            next_node += 1
        if i % 10 == 0:
            album_node = next_node
            album = f"Album {b:02d} ({sf.tags.year}) [FLAC]"
            nodes.append((album_node, artist_node, album, None, 0, dir_mtime, None, 0))
            next_node += 1
        version = content_version(fid, sf.stat, None)
        nodes.append(
            (next_node, album_node, f"{t:02d} - {sf.tags.title}.flac", fid, sf.stat.size,
             sf.stat.mtime_ns, key, version)
        )  # fmt: skip
        next_node += 1
        if len(files) >= 50_000:
            conn.executemany(file_sql, files)
            conn.executemany(node_sql, nodes)
            files.clear()
            nodes.clear()
    conn.executemany(file_sql, files)
    conn.executemany(node_sql, nodes)
    conn.execute("UPDATE nodes SET mtime_ns = ? WHERE id = ?", (dir_mtime, ROOT_NODE))
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()


class SchemaDrift(RuntimeError):
    """The catalog's schema has a column the bulk builder does not fill."""


def _check_columns(conn: sqlite3.Connection, table: str, known: tuple[str, ...]) -> None:
    """Fail if *table* has a column this module does not fill, or lacks one it does."""
    present = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
    unknown = [c for c in present if c not in known]
    missing = [c for c in known if c not in present]
    if unknown or missing:
        raise SchemaDrift(
            f"catalog table {table} has column(s) {unknown} that benchmarks/bench_data.py "
            f"does not fill and lacks {missing} that it does: update _synthetic_via_sql"
        )


#: What `bulk_matches_layout` compares: every row of these tables, but for the
#: times a build takes (when a file was scanned; folders' mtimes, compared as set).
_COMPARED_TABLES = ("settings", "origins", "files", "nodes", "sqlite_sequence", "search")
_MASKED = {
    ("files", "scanned_at"): "scanned_at > 0",
    ("nodes", "mtime_ns"): "CASE WHEN file_id IS NULL THEN mtime_ns > 0 ELSE mtime_ns END",
}


def catalog_rows(db: Path) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """Columns and rows of the tables the synthetic builders write (see `_MASKED`)."""
    conn = sqlite3.connect(db)
    try:
        out = {}
        for table in _COMPARED_TABLES:
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            exprs = [_MASKED.get((table, c), c) for c in cols]
            order = "rowid" if table != "sqlite_sequence" else "name"
            rows = conn.execute(f"SELECT {', '.join(exprs)} FROM {table} ORDER BY {order}")
            out[table] = (cols, rows.fetchall())
        return out
    finally:
        conn.close()


def bulk_matches_layout(workdir: Path, n: int = 2_000) -> str | None:
    """Build *n* tracks both ways; None if the catalogs are identical, else what differs."""
    dbs = {}
    for method in ("layout", "sql"):
        base = workdir / f"bulk-check-{method}"
        if base.exists():
            shutil.rmtree(base)
        base.mkdir(parents=True)
        (workdir / "lib").mkdir(exist_ok=True)
        dbs[method] = base / "catalog.sqlite3"
        build = _synthetic_via_layout if method == "layout" else _synthetic_via_sql
        try:
            build(dbs[method], workdir / "lib", n)  # one origin path for both
        except SchemaDrift as exc:
            return str(exc)
    layout, sql = catalog_rows(dbs["layout"]), catalog_rows(dbs["sql"])
    for table, (cols, layout_rows) in layout.items():
        sql_cols, sql_rows = sql[table]
        if cols != sql_cols:
            return f"table {table}: columns {cols} (layout) vs {sql_cols} (sql)"
        for k, (a, b) in enumerate(zip(layout_rows, sql_rows, strict=False)):
            if a != b:
                diff = {c: (x, y) for c, x, y in zip(cols, a, b, strict=True) if x != y}
                return f"table {table}, row {k + 1} differs (layout, sql): {diff}"
        if len(layout_rows) != len(sql_rows):
            return f"table {table}: {len(layout_rows)} rows (layout) vs {len(sql_rows)} (sql)"
    return None


def _verify_catalog(db: Path, n: int, virtual_paths: list[str]) -> None:
    from musicfs.core.catalog.store import Catalog

    with Catalog.open(db) as cat:
        tracks, _, _ = cat.counts()
        if tracks != n:
            raise RuntimeError(f"{db}: {tracks} tracks in the tree, expected {n}")
        for path in virtual_paths:
            node = cat.resolve(path)
            if node is None or node.file_id is None:
                raise RuntimeError(f"{db}: {path!r} is not in the tree")
        problems = cat.integrity_check()
        if problems != "ok":
            raise RuntimeError(f"{db}: integrity check: {problems}")


# -- the library of real files ---------------------------------------------------


def tree_relpath(i: int) -> str:
    """Path of file *i* of the bench library's tree (the same on disk and in every mount)."""
    a, b, t = i // 100, (i // 10) % 10, i % 10 + 1
    return f"tree/Artist {a:03d}/Album {b:02d}/{t:02d} - Song {i:05d}.flac"


def bench_library(
    cache_root: Path, *, tree: int, big_dir: int, small_dir: int, big_mib: int, log: Any = print
) -> dict[str, Any]:
    """Real files on disk and a MusicFS catalog whose virtual paths equal their paths.

    lib/tree/Artist NNN/Album NN/NN - Song NNNNN.flac   *tree* empty files
    lib/flat/x/big/fNNNNNN.flac                         *big_dir* empty files in one dir
    lib/flat/x/small/fNNNNNN.flac                       *small_dir* empty files
    lib/big/x/x/big.flac                                *big_mib* MiB of random bytes
    """
    directory = cache_root / f"benchlib-t{tree}-d{big_dir}-s{small_dir}-b{big_mib}"
    meta = _load_meta(directory)
    if meta is not None:
        _migrate(Path(meta["cache_dir"]) / "catalog.sqlite3", log)
        return {**meta, "dir": str(directory), "cached": True}
    _fresh(directory)
    origin = directory / "lib"
    log(f"building the bench library in {directory} ...")
    started = time.perf_counter()
    entries: list[tuple[str, str, str, str, str]] = []  # relpath, genre, albumartist, album, title
    for i in range(tree):
        a, b, t = i // 100, (i // 10) % 10, i % 10 + 1
        aa, al, ti = f"Artist {a:03d}", f"Album {b:02d}", f"{t:02d} - Song {i:05d}"
        entries.append((tree_relpath(i), "tree", aa, al, ti))
    for name, count in (("big", big_dir), ("small", small_dir)):
        for i in range(count):
            entries.append((f"flat/x/{name}/f{i:06d}.flac", "flat", "x", name, f"f{i:06d}"))
    made: set[str] = set()
    for rel, *_ in entries:
        parent = rel.rpartition("/")[0]
        if parent not in made:
            (origin / parent).mkdir(parents=True, exist_ok=True)
            made.add(parent)
        fd = os.open(origin / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
    big = origin / "big/x/x/big.flac"
    big.parent.mkdir(parents=True)
    rng = random.Random(7)
    with open(big, "wb") as f:
        block = rng.randbytes(1 << 20)
        for k in range(big_mib):
            f.write(block[k % 251 :] + block[: k % 251])  # distinct pages, cheap to make
        f.flush()
        os.fsync(f.fileno())
    entries.append(("big/x/x/big.flac", "big", "x", "x", "big"))
    files_seconds = time.perf_counter() - started
    log(f"  {len(entries):,} files in {files_seconds:.1f} s; placing them in a catalog ...")

    from musicfs.core.catalog.layout import Layout
    from musicfs.core.catalog.store import Catalog
    from musicfs.core.catalog.templates import PathTemplate
    from musicfs.core.model import FileStat, ScannedFile, TrackTags

    cache_dir = directory / "cache"
    template = PathTemplate.parse(BENCH_TEMPLATE)
    started = time.perf_counter()
    with Catalog.open(cache_dir / "catalog.sqlite3") as cat:
        cat.register_origin("lib", "local", str(origin))
        layout = Layout(cat, template)
        with cat.transaction():
            for rel, genre, aa, al, ti in entries:
                st = os.stat(origin / rel)
                tags = TrackTags(title=ti, albumartist=aa, artist=aa, album=al, genre=genre)
                sf = ScannedFile("lib", rel, FileStat(st.st_size, st.st_mtime_ns), "flac", tags)
                file_id = cat.upsert_file(sf)
                layout.place(file_id, rel, "flac", tags)
                # The file's own node: the changes also name the folders it touched.
                node = cat.node_of_file(file_id)
                placed = None if node is None else cat.path_of(node.id)
                if placed != rel:
                    raise RuntimeError(f"{rel} was placed at {placed}")
        _set_layout_settings(cat, BENCH_TEMPLATE)
    pack_listings(cache_dir / "catalog.sqlite3")
    layout_seconds = time.perf_counter() - started
    log(f"  catalog of {len(entries):,} tracks in {layout_seconds:.1f} s")
    _verify_catalog(cache_dir / "catalog.sqlite3", len(entries), [e[0] for e in entries[::997]])
    return {
        **_write_meta(
            directory,
            {
                "origin": str(origin),
                "cache_dir": str(cache_dir),
                "template": BENCH_TEMPLATE,
                "tree_files": tree,
                "big_dir_files": big_dir,
                "small_dir_files": small_dir,
                "big_file": "big/x/x/big.flac",
                "big_file_bytes": big.stat().st_size,
                "tree_dir": "tree",
                "big_dir": "flat/x/big",
                "small_dir": "flat/x/small",
                "layout_seconds": round(layout_seconds, 3),
                "layout_tracks_per_second": round(len(entries) / layout_seconds),
            },
        ),
        "dir": str(directory),
        "cached": False,
    }


# -- real audio files for the scanner ---------------------------------------------


#: The scan's tracks are of real size (3.5 minutes, a few MB): what a cold scan
#: costs is where on disk the tags and the identity's samples lie, which tiny
#: files (one readahead each) hide. Low bitrates keep 5,000 files near 11 GiB.
SCAN_SECONDS = 210
_SCAN_SEEDS = {
    # pink noise, so that FLAC cannot shrink it to nothing as it does a sine
    "flac": (
        "anoisesrc=color=pink:amplitude=0.05:sample_rate=11025",
        ["-sample_fmt", "s16", "-c:a", "flac"],
    ),
    "mp3": (
        "anoisesrc=color=pink:amplitude=0.3:sample_rate=22050",
        ["-c:a", "libmp3lame", "-b:a", "64k"],
    ),
}


def tagged_tracks(
    origin: Path, n: int, seeds: dict[str, Path], *, distinct_audio: bool = False
) -> int:
    """*n* copies of *seeds* (``{"flac": path, "mp3": path}``; FLAC and MP3 by
    turns, by album) under *origin*, 10 per album folder, tagged with distinct
    titles, artists and albums; their bytes. *distinct_audio*: each file its own
    audio, as in a real library (the last audio frame gets the file's number,
    in the identity's last sample); identical payloads would all share one audio
    identity, which no library has."""
    from mutagen.easyid3 import EasyID3
    from mutagen.flac import FLAC
    from mutagen.id3 import ID3NoHeaderError

    total = 0
    for i in range(n):
        a, b, t = i // 100, (i // 10) % 10, i % 10 + 1
        fmt = "flac" if (i // 10) % 2 == 0 else "mp3"
        folder = origin / f"Artist {a:03d}" / f"Album {b:02d}"
        if t == 1:
            folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{t:02d} - track.{fmt}"
        shutil.copyfile(seeds[fmt], path)
        values = {"title": f"Song {i:05d}", "artist": f"Artist {a:03d}",
                  "album": f"Album {b:02d}", "date": str(1970 + a % 50),
                  "tracknumber": f"{t}/10", "genre": "Benchmark"}  # fmt: skip
        audio: Any
        if fmt == "flac":
            audio = FLAC(path)
        else:
            try:
                audio = EasyID3(path)
            except ID3NoHeaderError:
                audio = EasyID3()
        for key, value in values.items():
            audio[key] = value
        audio.save(path) if fmt == "mp3" else audio.save()
        size = path.stat().st_size
        if distinct_audio:
            with open(path, "r+b") as file:
                os.pwrite(file.fileno(), i.to_bytes(8, "big"), size - 64)
        total += size
    return total


def scan_library(cache_root: Path, n: int, *, log: Any = print) -> dict[str, Any]:
    """*n* tagged audio files of real size (half FLAC, about 2.9 MB each, half MP3,
    about 1.7 MB), 10 per album folder."""
    directory = cache_root / f"scanlib-{n}-{SCAN_SECONDS}s"
    meta = _load_meta(directory)
    if meta is not None:
        return {**meta, "dir": str(directory), "cached": True}
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg is not installed (apt-get install ffmpeg)")
    _fresh(directory)
    log(f"making {n:,} tagged audio files of {SCAN_SECONDS} s in {directory} ...")
    started = time.perf_counter()
    seeds = directory / "seed"
    seeds.mkdir()
    for fmt, (source, args) in _SCAN_SEEDS.items():
        subprocess.run(
            ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"{source}:duration={SCAN_SECONDS}",
             "-ac", "1", *args, str(seeds / f"seed.{fmt}")],
            check=True,
        )  # fmt: skip
    origin = directory / "lib"
    total = tagged_tracks(origin, n, {fmt: seeds / f"seed.{fmt}" for fmt in _SCAN_SEEDS},
                          distinct_audio=True)  # fmt: skip
    seconds = time.perf_counter() - started
    log(f"  {n:,} files ({total / 2**20:.0f} MiB) in {seconds:.1f} s")
    return {
        **_write_meta(
            directory,
            {"files": n, "bytes": total, "origin": str(origin), "build_seconds": round(seconds, 3)},
        ),
        "dir": str(directory),
        "cached": False,
    }
