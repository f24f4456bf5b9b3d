"""The tab knows every person, photo and job: names in the list, the running job shown whoever started it,
photos removed one by one, uploads read only once they have arrived, a failed upload keeps nothing."""

from __future__ import annotations

import threading
from pathlib import Path
import time

import pytest

from lib_profile import sample_photos
from lib_profile.hosts.base import HostError

try:
    from test_api import png
    from test_tab_handlers import handler
except ImportError:
    from tests.test_api import png
    from tests.test_tab_handlers import handler


@pytest.fixture
def tab(host, tmp_path, monkeypatch):
    from lib_profile.service import Studio
    from lib_profile.ui.tab import build_tab

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    studio = Studio(host, tmp_path / "data")
    yield studio, build_tab(lambda: studio)
    studio.close()


def photo_files(tmp_path, n=6):
    paths = []
    for name, image in sample_photos.selfies()[:n]:
        path = tmp_path / f"{name}.jpg"
        path.write_bytes(png(image))
        paths.append(str(path))
    return paths


def test_people_are_listed_by_name_and_their_class_and_photos_follow(tab, tmp_path):
    studio, blocks = tab
    status, people, name_box = handler(blocks, "do_create")("Anna Lee", "woman")
    assert people["value"] == "Anna Lee" and "Anna Lee" in people["choices"] and name_box == ""
    handler(blocks, "do_create")("Bob", "man")
    out = handler(blocks, "on_person")("Anna Lee")
    assert out[0]["value"] == "woman" and out[1]["choices"] == [] and out[6] == "" and out[7] is None
    checked = handler(blocks, "do_check")("Anna Lee", photo_files(tmp_path))
    assert checked[0] == "Photos checked." and len(checked[3]["choices"]) == 6 and checked[4] is None
    assert studio.store.get("anna-lee")["photos"] == sorted(checked[3]["choices"])
    assert handler(blocks, "on_person")("Bob")[0]["value"] == "man"


def test_photos_are_removed_one_by_one_and_the_rest_checked_again(tab, tmp_path):
    studio, blocks = tab
    handler(blocks, "do_create")("Anna", "woman")
    handler(blocks, "do_check")("Anna", photo_files(tmp_path))
    names = studio.store.get("anna")["photos"]
    status, report, _sheet, photos = handler(blocks, "do_remove")("Anna", names[:2])
    assert status == "Removed 2 photo(s)." and "4 photos accepted" in report.split("**")[1].replace(" of 4", "")
    assert photos["choices"] == names[2:]
    status, report, sheet, photos = handler(blocks, "do_remove")("Anna", names[2:])
    assert report == "No photos yet." and sheet is None and photos["choices"] == []
    assert studio.store.get("anna")["intake"] is None
    assert "Pick the photos" in handler(blocks, "do_remove")("Anna", [])[0]


def test_check_waits_for_photos_still_uploading(tab, tmp_path, monkeypatch):
    """Clicked while the browser still uploads, Check read every photo as 0 bytes; it waits for them now."""
    from lib_profile.ui import uploads

    studio, blocks = tab
    handler(blocks, "do_create")("Anna", "woman")
    paths = photo_files(tmp_path)
    data = {p: open(p, "rb").read() for p in paths}
    for p in paths:
        open(p, "wb").close()  # the files exist, empty, as gradio makes them before the bytes arrive

    def arrive():
        time.sleep(0.8)
        for p, d in data.items():
            with open(p, "wb") as f:
                f.write(d)

    threading.Thread(target=arrive).start()
    checked = handler(blocks, "do_check")("Anna", paths)
    assert checked[0] == "Photos checked." and "6 of 6 photos accepted" in checked[1]
    empty = tmp_path / "never.jpg"
    empty.write_bytes(b"")
    with pytest.raises(HostError, match="still uploading .*never.jpg"):
        uploads.wait_for_uploads([str(empty)], timeout=0.5, settle=0.1)
    assert "No photos have arrived yet" in handler(blocks, "do_check")("Anna", [])[0]


def test_a_failed_upload_keeps_none_of_its_photos(tab, tmp_path, monkeypatch):
    from lib_profile.photos import intake

    studio, _blocks = tab
    studio.create_identity("Anna", "woman")

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(intake, "run_intake", broken)
    from lib_profile.store.files import StorageError

    with pytest.raises(StorageError, match="disk is full"):  # a storage fault says which folder needs space
        studio.add_photos("anna", [(f"{n}.jpg", png(i)) for n, i in sample_photos.selfies()[:3]])
    assert studio.store.get("anna")["photos"] == []
    assert not list((studio.store.folder("anna") / "uploads").iterdir())


def test_the_running_job_is_shown_whoever_started_it_and_train_points_at_it(tab, tmp_path):
    studio, blocks = tab
    handler(blocks, "do_create")("Anna", "woman")
    studio.jobs.db.insert("abc123def456", "generate", "anna", {})  # started elsewhere (the API), still queued
    out = handler(blocks, "on_person")("Anna")
    assert "Generate job abc123def456: queued" in out[6] and out[7] == "abc123def456"
    status, job_id = handler(blocks, "do_train")("Anna", 100)
    assert "already has a job" in status and "abc123def456: queued" in status and job_id == "abc123def456"
    status, _id = handler(blocks, "do_cancel")(job_id)
    assert "cancelled" in status


def test_deleting_a_person_removes_gradios_copies_of_their_files(tab, tmp_path, monkeypatch):
    """gradio keeps a copy of every file the tab took in or showed (selfies, contact sheet, portraits)."""
    import hashlib

    studio, blocks = tab
    temp = tmp_path / "gradio-temp"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(temp))
    handler(blocks, "do_create")("Anna", "woman")
    paths = photo_files(tmp_path, 3)
    handler(blocks, "do_check")("Anna", paths)
    sheet = studio.identity_file("anna", "contact_sheet")
    copies = []
    for src in [paths[0], str(sheet)]:  # as gradio stores them: <temp>/<hash>/<name>
        data = open(src, "rb").read()
        dest = temp / hashlib.sha1(data).hexdigest() / Path(src).name
        dest.parent.mkdir(parents=True)
        dest.write_bytes(data)
        copies.append(dest)
    other = temp / "0123" / "someone-else.png"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"not Anna")
    removed = studio.delete_identity("anna")
    assert all(str(c) in removed and not c.exists() and not c.parent.exists() for c in copies)
    assert other.read_bytes() == b"not Anna"


def test_the_face_embedding_can_be_left_out_of_the_lora(tab):
    from lib_profile.api.models import TrainRequest
    from lib_profile.service import TRAIN_OPTIONS
    from lib_profile.train.trainer import TrainConfig

    assert "identity_in_lora" in TRAIN_OPTIONS and "identity_in_lora" in TrainRequest.__fields__
    assert TrainConfig(name="a").identity_in_lora is True
