"""NTU RGB+D naming: the `SsssCcccPpppRrrrAaaa` clip names and their files (METHOD.md §8)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")
_FILE = re.compile(r"^(S\d{3}C\d{3}P\d{3}R\d{3}A\d{3})(_rgb\.avi|_rgb\.mp4|\.mp4|\.avi|\.skeleton)$")
#: Anything shaped like an NTU clip file, even with the wrong digit counts (S1C1P1R1A58_rgb.avi).
_LOOSE_FILE = re.compile(r"^S\d+C\d+P\d+R\d+A(\d+)(?:_rgb\.avi|_rgb\.mp4|\.mp4|\.avi|\.skeleton)$", re.IGNORECASE)
VIDEO_SUFFIXES = ("_rgb.avi", "_rgb.mp4", ".mp4", ".avi")
SKELETON_SUFFIX = ".skeleton"


class DatasetFolderError(ValueError):
    """A dataset root a generator must not write into; the message says why and what to do."""


class ClipNameError(ValueError):
    """A file or clip name that is not an NTU `SsssCcccPpppRrrrAaaa` name."""


@dataclass(frozen=True, order=True)
class ClipName:
    """The five fields of an NTU clip name; `str()` gives the canonical 20-character name."""

    setup: int
    camera: int
    performer: int
    replication: int
    action: int

    def __str__(self) -> str:
        return (
            f"S{self.setup:03d}C{self.camera:03d}P{self.performer:03d}"
            f"R{self.replication:03d}A{self.action:03d}"
        )

    @property
    def relation(self) -> str:
        """The action as a relation id, e.g. 'A058'."""
        return f"A{self.action:03d}"


def parse_clip_name(name: str) -> ClipName:
    """Parse `S001C002P003R001A058` (no extension); raise ClipNameError naming the bad part."""
    match = _NAME.fullmatch(name)
    if not match:
        raise ClipNameError(
            f"{name!r} is not an NTU clip name: expected SsssCcccPpppRrrrAaaa, e.g. S001C002P003R001A058"
        )
    clip = ClipName(*(int(g) for g in match.groups()))
    if not 1 <= clip.camera <= 3:
        raise ClipNameError(f"{name!r}: camera C{clip.camera:03d} is outside C001-C003")
    if not 1 <= clip.replication <= 2:
        raise ClipNameError(f"{name!r}: replication R{clip.replication:03d} is outside R001-R002")
    if not 1 <= clip.action <= 120:
        raise ClipNameError(f"{name!r}: action A{clip.action:03d} is outside A001-A120")
    if clip.setup == 0 or clip.performer == 0:
        raise ClipNameError(f"{name!r}: setup and performer numbers start at 1")
    return clip


def parse_file_name(file_name: str) -> tuple[ClipName, str]:
    """Split an NTU file name into its clip name and kind ('video' or 'skeleton')."""
    base = file_name.rsplit("/", 1)[-1]
    match = _FILE.match(base)
    if not match:
        raise ClipNameError(
            f"{base!r} is not an NTU file name: expected SsssCcccPpppRrrrAaaa followed by "
            "_rgb.avi, _rgb.mp4, .mp4, .avi or .skeleton"
        )
    stem, suffix = match.groups()
    return parse_clip_name(stem), ("skeleton" if suffix == SKELETON_SUFFIX else "video")


def misnamed_clip_relation(file_name: str) -> str | None:
    """The relation id a file that looks like an NTU clip file seems to belong to, else None.

    For files that `parse_file_name` rejects: `S001C001P001R001A58_rgb.avi` -> 'A058', so
    selection can report it among the relation's dropped clips instead of ignoring it.
    """
    match = _LOOSE_FILE.match(file_name.rsplit("/", 1)[-1])
    return f"A{int(match.group(1)):03d}" if match else None


class RelationNameError(ValueError):
    """A relation name that cannot be made into a valid relation id (artifact and Prefect keys)."""


#: Longest relation slug (it is part of artifact paths and Prefect artifact keys).
MAX_SLUG_LENGTH = 64


def relation_slug(name: str) -> str:
    """A user relation's id from its name: 'Fist Bump' -> 'fist_bump', 'Händeschütteln' -> 'handeschutteln'.

    Accents are dropped (NFKD), letters lower-cased, every run of other characters becomes one
    '_' (dashes are kept). A name with no ASCII letter or digit left raises RelationNameError.
    """
    ascii_text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9-]+", "_", ascii_text.lower()).strip("_-")
    if not slug:
        raise RelationNameError(
            f"relation name {name!r} has no ASCII letter or digit to make an id from (ids name artifact "
            "folders and Prefect keys); rename its folder, e.g. 'fist_bump'"
        )
    if len(slug) > MAX_SLUG_LENGTH:
        raise RelationNameError(f"relation name {name!r} is too long for an id ({len(slug)} > {MAX_SLUG_LENGTH} characters)")
    return slug


def normalize_relation_id(value: str | int) -> str:
    """'58', 58, 'a58', 'A058' -> 'A058'; any other name -> its slug ('Fist Bump' -> 'fist_bump')."""
    text = str(value).strip()
    digits = text[1:] if text[:1] in "aA" else text
    if digits.isdigit():
        return f"A{int(digits):03d}"
    return relation_slug(text)
