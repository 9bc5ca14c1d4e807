"""Own-folder datasets (`select.source: folder`, issue 12): relation folders of plain videos.

    <dataset_root>/<relation>/<clip>.<mp4|avi|mov|mkv|webm>   any size, fps and length
    <dataset_root>/<relation>/<clip>.txt          optional caption, optional YAML front matter:
                                                  ---
                                                  start_seconds: 2.5
                                                  ---
                                                  Two people are fist-bumping.
    <dataset_root>/<relation>/<clip>.masks.npz    optional masks: array `masks`, (T, 2, H, W) bool or
                                                  uint8, subject 1 then subject 2, the video's own T, H, W
    <dataset_root>/<relation>/<clip>.masks/       or one label PNG per frame: 0 background, the two
                                                  other values subject 1 (smaller) and subject 2

A relation's id is its folder name's slug (`data.ntu.relation_slug`: 'Fist Bump' -> 'fist_bump');
a clip's id is its file stem. This module lists such a root (a local folder or an fsspec URL),
parses sidecars and reads user masks; `data.select` chooses the clips.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass, field

import fsspec
import numpy as np
import yaml
from PIL import Image

from dreamrelation.data.masks import SUBJECTS, frame_number
from dreamrelation.data.ntu import RelationNameError, relation_slug
from dreamrelation.data.relations import describe_yaml_error
from dreamrelation.data.video import VIDEO_SUFFIXES

CAPTION_SUFFIX = ".txt"
MASKS_NPZ = ".masks.npz"
MASKS_DIR = ".masks"
#: Keys a sidecar's front matter may set.
FRONT_MATTER_KEYS = frozenset({"start_seconds"})


class FolderDatasetError(ValueError):
    """An own-folder dataset root that cannot be used (missing, empty, clashing relation names)."""


class SidecarError(ValueError):
    """A caption sidecar whose front matter cannot be read."""


class MaskFileError(ValueError):
    """A user mask file that does not fit its clip; the message names the file."""


@dataclass(frozen=True)
class FolderClip:
    """One video of a relation folder and the sidecars found beside it."""

    clip_id: str  # the file stem
    video: str  # path or URL
    caption_file: str | None
    masks: str | None  # <clip>.masks.npz or <clip>.masks/ (path or URL)


@dataclass
class FolderRelation:
    """One relation folder: its id (slug), the folder's own name, its clips and the files left out."""

    id: str
    name: str
    path: str
    clips: list[FolderClip] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)  # file name -> why it is not a clip


@dataclass
class FolderListing:
    """Relation folders of a root by id, and the folders whose names cannot become ids."""

    root: str
    relations: dict[str, FolderRelation]
    invalid: dict[str, str]  # folder name -> reason (no usable name, no video)

    def why_not_a_relation(self, given: str) -> str | None:
        """Why the folder named `given` (or whose name slugs like it) is no relation; None if no such folder."""
        wanted = _slug_or_none(given)
        for folder, reason in self.invalid.items():
            if folder == given or (wanted is not None and _slug_or_none(folder) == wanted):
                return f"the folder {folder!r} under dataset root {self.root} is not used: {reason}"
        return None


def _slug_or_none(name: str) -> str | None:
    try:
        return relation_slug(name)
    except RelationNameError:
        return None


def _name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _join(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A listed path as the user would give it again: plain for local files, a URL otherwise."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if protocol in ("file", "local") else fs.unstrip_protocol(path)


def list_folder_dataset(root: str) -> FolderListing:
    """Every `<root>/<relation>/` folder holding at least one video, with its clips' sidecars.

    Raises FolderDatasetError when the root is missing or two folder names give the same id.
    """
    fs, base = fsspec.core.url_to_fs(root)
    if not fs.isdir(base):
        raise FolderDatasetError(f"dataset root {root} does not exist or is not a folder")
    relations: dict[str, FolderRelation] = {}
    invalid: dict[str, str] = {}
    for entry in sorted(fs.ls(base, detail=True), key=lambda e: e["name"]):
        folder = _name(entry["name"])
        if entry["type"] != "directory" or folder.startswith("."):
            continue
        relation = _list_relation(fs, entry["name"], folder)
        if not relation.clips:
            invalid[folder] = f"it holds no video ({' '.join(sorted(VIDEO_SUFFIXES))})"
            continue
        try:
            relation.id = relation_slug(folder)
        except RelationNameError as exc:
            invalid[folder] = str(exc)
            continue
        if relation.id in relations:
            raise FolderDatasetError(
                f"dataset root {root}: folders {relations[relation.id].name!r} and {folder!r} both give the relation "
                f"id {relation.id!r}; rename one of them"
            )
        relations[relation.id] = relation
    return FolderListing(root, relations, invalid)


def _list_relation(fs: fsspec.AbstractFileSystem, path: str, folder: str) -> FolderRelation:
    entries = {_name(e["name"]): e for e in fs.ls(path, detail=True)}
    relation = FolderRelation(id="", name=folder, path=_join(fs, path))
    stems: dict[str, str] = {}
    for name in sorted(entries):
        suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
        if entries[name]["type"] == "directory" or suffix not in VIDEO_SUFFIXES or name.startswith("."):
            continue
        stem = name[: -len(suffix)]
        if stem in stems:
            relation.ignored[name] = f"another video has the same name: {stems[stem]}"
            continue
        stems[stem] = name
        caption = f"{stem}{CAPTION_SUFFIX}"
        masks = next((m for m in (f"{stem}{MASKS_NPZ}", f"{stem}{MASKS_DIR}") if m in entries), None)
        relation.clips.append(
            FolderClip(
                clip_id=stem,
                video=_join(fs, entries[name]["name"]),
                caption_file=_join(fs, entries[caption]["name"]) if caption in entries else None,
                masks=_join(fs, entries[masks]["name"]) if masks else None,
            )
        )
    return relation


def folder_digest(root: str, relation: FolderRelation | None) -> str:
    """A hash of what a listed relation folder holds: every file's name and size, and the sidecar texts.

    Part of the selection's fingerprint, so editing a caption (or replacing a video or masks
    file) re-runs the stages that depend on it. No folder (None) hashes as empty.
    """
    digest = hashlib.sha256()
    if relation is None:
        return digest.hexdigest()[:16]
    fs, base = fsspec.core.url_to_fs(root)
    for path, info in sorted(fs.find(f"{base.rstrip('/')}/{relation.name}", detail=True).items()):
        digest.update(f"{path[len(base):]}\0{info.get('size')}\0".encode())
        if path.endswith(CAPTION_SUFFIX):
            digest.update(fs.cat_file(path))
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------- sidecars


def parse_sidecar(text: str, name: str) -> tuple[str, dict[str, float]]:
    """A sidecar's caption (whitespace collapsed; '' if none) and its front matter.

    Front matter is a YAML mapping between two '---' lines at the top; its only key is
    `start_seconds` (where the clip's window starts, >= 0).
    """
    lines = text.lstrip("\ufeff").splitlines()
    front: dict[str, float] = {}
    if lines and lines[0].strip() == "---":
        end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
        if end is None:
            raise SidecarError(f"{name}: the front matter opened with '---' is never closed by a '---' line")
        try:
            data = yaml.safe_load("\n".join(lines[1:end])) or {}
        except yaml.YAMLError as exc:
            raise SidecarError(f"{name}: front matter is not valid YAML: {describe_yaml_error(exc)}") from None
        if not isinstance(data, dict):
            raise SidecarError(f"{name}: front matter must be a mapping such as 'start_seconds: 2.5'")
        unknown = sorted(set(data) - FRONT_MATTER_KEYS)
        if unknown:
            raise SidecarError(f"{name}: unknown front matter key(s) {unknown}; known: {sorted(FRONT_MATTER_KEYS)}")
        if "start_seconds" in data:
            front["start_seconds"] = check_start(data["start_seconds"], name)
        lines = lines[end + 1 :]
    return " ".join(" ".join(lines).split()), front


def check_start(value: object, where: str) -> float:
    """A window start in seconds: a number >= 0."""
    try:
        start = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SidecarError(f"{where}: start_seconds must be a number, got {value!r}") from None
    if not start >= 0:
        raise SidecarError(f"{where}: start_seconds must be >= 0, got {value!r}")
    return start


def read_sidecar(clip: FolderClip) -> tuple[str, dict[str, float]]:
    """The clip's sidecar caption and front matter ('' and {} without a sidecar)."""
    if clip.caption_file is None:
        return "", {}
    with fsspec.open(clip.caption_file, "r", encoding="utf-8") as handle:
        return parse_sidecar(handle.read(), _name(clip.caption_file))


# --------------------------------------------------------------------------- masks


def read_user_masks(location: str, clip_id: str, frames: int, height: int, width: int) -> np.ndarray:
    """The user's masks of one clip as (T, 2, H, W) bool, validated against the video's T, H, W.

    `location` is `<clip>.masks.npz` (array `masks`) or a `<clip>.masks/` folder of label PNGs,
    one per frame (numbered in their names), whose two non-zero values are the subjects.
    """
    name = _name(location)
    masks = _read_npz(location, name) if location.endswith(MASKS_NPZ) else _read_png_folder(location, name)
    _check_shape(tuple(masks.shape), name, clip_id, frames, height, width)
    return masks


def check_user_masks(location: str, clip_id: str, frames: int, height: int, width: int) -> None:
    """Raise MaskFileError unless the clip's masks fit its video, as `read_user_masks` would, without loading them.

    Selection calls this for every clip it checks (`select.require_masks`), so a clip whose masks
    do not fit is replaced by the next usable one before any model runs. A `.masks.npz` is checked
    from its array header; a `.masks/` folder frame by frame (count, size, the two subject labels).
    """
    name = _name(location)
    if location.endswith(MASKS_NPZ):
        shape, dtype = _npz_header(location, name)
        if dtype != bool and dtype != np.uint8:
            raise MaskFileError(f"{name}: masks must be bool or uint8, got {dtype}")
    else:
        shape = _png_folder_shape(location, name)
    _check_shape(shape, name, clip_id, frames, height, width)


def _check_shape(shape: tuple[int, ...], name: str, clip_id: str, frames: int, height: int, width: int) -> None:
    if len(shape) != 4 or shape[1] != SUBJECTS:
        raise MaskFileError(
            f"clip {clip_id}: {name} has masks of shape {shape}; expected (T, 2, H, W) with subject 1 then 2"
        )
    if shape[0] != frames:
        raise MaskFileError(f"clip {clip_id}: {name} has {shape[0]} frames of masks, the video has {frames}")
    if shape[2:] != (height, width):
        raise MaskFileError(
            f"clip {clip_id}: {name} masks are {shape[3]}x{shape[2]}, the video is {width}x{height} "
            "(masks must be at the video's own resolution)"
        )


def _npz_header(location: str, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the `masks` array of a .npz file, from its header (the data is not read)."""
    try:
        with fsspec.open(location, "rb") as handle, zipfile.ZipFile(handle) as archive:
            found = [member.removesuffix(".npy") for member in archive.namelist()]
            if "masks" not in found:
                raise MaskFileError(f"{name} has no array named 'masks' (found: {', '.join(found) or 'none'})")
            with archive.open("masks.npy") as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                else:  # a header layout without a public reader: read the array
                    masks = _read_npz(location, name)
                    return tuple(masks.shape), np.dtype(bool)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        if isinstance(exc, MaskFileError):
            raise
        raise MaskFileError(f"cannot read {name}: {exc}") from None
    return tuple(shape), dtype


def _png_folder_shape(location: str, name: str) -> tuple[int, ...]:
    """(T, 2, H, W) of a folder of label PNGs, read one frame at a time; checks the labels as `_read_png_folder`."""
    fs, base = fsspec.core.url_to_fs(location)
    files = [p for p in fs.ls(base, detail=False) if p.lower().endswith(".png")]
    if not files:
        raise MaskFileError(f"{name} holds no .png frames")
    sizes, values = set(), set()
    try:
        for path in files:
            labels = np.asarray(Image.open(io.BytesIO(fs.cat_file(path))))
            if labels.ndim != 2:
                raise MaskFileError(f"{name}: label PNGs must be single-channel (one label value per pixel)")
            sizes.add(labels.shape)
            values.update(int(v) for v in np.unique(labels) if v != 0)
    except (OSError, ValueError) as exc:
        if isinstance(exc, MaskFileError):
            raise
        raise MaskFileError(f"{name}: cannot read the label frames: {exc}") from None
    if len(sizes) != 1:
        raise MaskFileError(f"{name}: label PNGs of different sizes: {sorted(sizes)}")
    if len(values) != SUBJECTS:
        found = sorted(values)
        raise MaskFileError(f"{name}: expected 2 subject labels besides 0 (background), found {len(found)}: {found[:10]}")
    height, width = sizes.pop()
    return (len(files), SUBJECTS, height, width)


def _read_npz(location: str, name: str) -> np.ndarray:
    try:
        with fsspec.open(location, "rb") as handle, np.load(io.BytesIO(handle.read())) as data:
            found = list(data.files)
            masks = data["masks"] if "masks" in found else None
    except (OSError, ValueError) as exc:
        raise MaskFileError(f"cannot read {name}: {exc}") from None
    if masks is None:
        raise MaskFileError(f"{name} has no array named 'masks' (found: {', '.join(found) or 'none'})")
    if masks.dtype != bool and masks.dtype != np.uint8:
        raise MaskFileError(f"{name}: masks must be bool or uint8, got {masks.dtype}")
    return masks.astype(bool)


def _read_png_folder(location: str, name: str) -> np.ndarray:
    fs, base = fsspec.core.url_to_fs(location)
    files = [p for p in fs.ls(base, detail=False) if p.lower().endswith(".png")]
    if not files:
        raise MaskFileError(f"{name} holds no .png frames")
    try:
        files = sorted(files, key=frame_number)
        labels = np.stack([np.asarray(Image.open(io.BytesIO(fs.cat_file(p)))) for p in files])
    except (OSError, ValueError) as exc:
        raise MaskFileError(f"{name}: cannot read the label frames: {exc}") from None
    if labels.ndim != 3:
        raise MaskFileError(f"{name}: label PNGs must be single-channel (one label value per pixel)")
    values = [int(v) for v in np.unique(labels) if v != 0]
    if len(values) != SUBJECTS:
        raise MaskFileError(
            f"{name}: expected 2 subject labels besides 0 (background), found {len(values)}: {values[:10]}"
        )
    return np.stack([labels == values[0], labels == values[1]], axis=1)
