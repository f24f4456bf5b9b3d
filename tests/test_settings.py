"""The one settings model: every field x every kind of bad value is refused, naming the field and its allowed range,
through the model, the HTTP API (standalone and mounted in the WebUI), the command line and the tab; the settings
used are written into the PNG infotext and read back."""

from __future__ import annotations

import json

import fastapi
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lib_profile import API_PREFIX, validation
from lib_profile.studio.settings import (GenerateSettings, PlanSettings, SettingsError, SourceSettings, check,
                                         from_infotext)

from tests.test_api import NAME, SLUG  # the api and studio fixtures: conftest.py

MODELS = {"generate": GenerateSettings, "explain": SourceSettings, "edit": SourceSettings}
# what settings is not: the request's own fields and made-up ones (each was a 500 or silently used before)
UNKNOWN = ["count", "prompt", "lora", "pose", "seed", "switches", "stages", "version", "bogus"]


def bad_values(node: dict) -> list:
    """Values outside what a field's schema allows: wrong types, just below and above its range, off its step."""
    node = next((o for o in node.get("anyOf", [node]) if o.get("type") != "null"), node)
    kind = node["type"]
    out: list = [[1], {"a": 1}]
    if kind == "integer":
        out += ["abc", "5", 1.5, True]
    elif kind == "number":
        out += ["abc", "x1"]
    elif kind == "string":
        out += [5, 1.5, True]
    lo, hi = node.get("minimum"), node.get("maximum")
    if lo is not None:
        out.append(lo - (1 if kind == "integer" else 0.01))
    if hi is not None:
        out.append(hi + (1 if kind == "integer" else 0.01))
    if node.get("exclusiveMinimum") is not None:
        out.append(node["exclusiveMinimum"])
    if node.get("exclusiveMaximum") is not None:
        out.append(node["exclusiveMaximum"])
    if node.get("multipleOf") and lo is not None:
        out.append(lo + node["multipleOf"] // 2)
    if node.get("minLength"):
        out.append("")
    if node.get("maxLength"):
        out.append("x" * (node["maxLength"] + 1))
    return out


def cases(model) -> list[tuple[str, object]]:
    props = validation.schema(model)["properties"]
    return [(name, value) for name, node in props.items() for value in bad_values(node)] + \
        [(name, 1) for name in UNKNOWN]


def range_words(model, name: str) -> str:
    """What the message must say the field allows (its range, or the fields there are)."""
    props = validation.schema(model)["properties"]
    if name not in props:
        return "allowed: width, height, steps"
    return "allowed: " + validation.allowed(props[name], validation.schema(model))


def test_every_field_has_a_type_a_range_and_a_description():
    for model in (PlanSettings, GenerateSettings, SourceSettings):
        for name, node in validation.schema(model)["properties"].items():
            assert node.get("description"), (model.__name__, name)
            words = validation.allowed(node, validation.schema(model))
            assert words.startswith(("an integer", "a number", "text")), (name, words)
            if words.startswith(("an integer", "a number")):
                assert "within" in words, (name, words)


@pytest.mark.parametrize("model", [GenerateSettings, SourceSettings], ids=lambda m: m.__name__)
def test_the_model_refuses_every_bad_value_naming_field_and_range(model):
    for name, value in cases(model):
        with pytest.raises(SettingsError) as info:
            check(model, {name: value})
        message = str(info.value)
        assert message.startswith(f"settings.{name}: "), (name, value, message)
        assert range_words(model, name) in message, (name, value, message)
        assert info.value.fields == [f"settings.{name}"]


def test_good_values_pass_and_null_means_the_default():
    good = {"width": 64, "height": 4096, "steps": 1, "cfg_scale": 7, "sampler": "Euler a", "scheduler": "Karras",
            "clip_skip": 12, "negative_prompt": "", "hires_scale": 4, "hires_steps": 0, "hires_denoising": 1,
            "hires_upscaler": "Latent"}
    assert check(SourceSettings, good) == {**good, "cfg_scale": 7.0, "hires_scale": 4.0, "hires_denoising": 1.0}
    assert check(SourceSettings, {"steps": None, "width": 512}) == {"width": 512}
    assert check(GenerateSettings, None) == {} and check(GenerateSettings, {"controlnet_pose": ""}) == \
        {"controlnet_pose": ""}
    assert check(GenerateSettings, {"controlnet_pose": None, "steps": None}) == {"controlnet_pose": None}
    for bad in ("abc", [1], 5):
        with pytest.raises(SettingsError, match="settings: must be an object"):
            check(PlanSettings, bad)
    with pytest.raises(SettingsError, match="settings.hires_scale: unknown field"):  # no hires fix in a plan
        check(GenerateSettings, {"hires_scale": 2})


# ---------------------------------------------------------------- the HTTP API, standalone (real uvicorn)
def request_body(route: str, settings: dict) -> tuple[str, dict]:
    if route == "generate":
        return f"/identities/{SLUG}/generate", {"settings": settings, "count": 1}
    body = {"identity": SLUG, "prompt": "a portrait", "settings": settings}
    return f"/{route}", {**body, "words": ["portrait"]} if route == "explain" else {**body, "target": "a photo"}


@pytest.mark.parametrize("route", list(MODELS))
def test_api_answers_400_naming_the_field_and_range_and_makes_no_job(api, route):
    api.post("/identities", json={"name": NAME}).raise_for_status()
    model = MODELS[route]
    for name, value in cases(model):
        path, body = request_body(route, {name: value})
        r = api.post(path, json=body)
        assert r.status_code == 400, (route, name, value, r.status_code, r.text)
        detail = r.json()["detail"]
        assert f"settings.{name}" in detail and range_words(model, name) in detail, (route, name, value, detail)
    assert api.get("/jobs").json() == []


def test_api_checks_the_sampler_against_the_host_and_other_ranges(api):
    api.post("/identities", json={"name": NAME}).raise_for_status()
    for route in MODELS:
        path, body = request_body(route, {"sampler": "Warp Drive"})
        r = api.post(path, json=body)
        assert r.status_code == 400 and "settings.sampler" in r.json()["detail"] and "Euler a" in r.json()["detail"]
    for path, body, field, words in [
        (f"/identities/{SLUG}/generate", {"count": 0}, "count", "1..100"),
        (f"/identities/{SLUG}/generate", {"count": 101}, "count", "1..100"),
        (f"/identities/{SLUG}/generate", {"seed": -2}, "seed", "-1..4294967295"),
        (f"/identities/{SLUG}/generate", {"lora_weight": 9}, "lora_weight", "-4..4"),
        (f"/identities/{SLUG}/train", {"rank": 0}, "rank", "1..256"),
        (f"/identities/{SLUG}/train", {"resolution": 100}, "resolution", "multiple of 64 within 64..1024"),
        ("/edit", {"identity": SLUG, "prompt": "a", "cross_steps": 1.5}, "cross_steps", "0..1"),
        ("/edit", {"identity": SLUG, "prompt": "a", "blend_threshold": 1}, "blend_threshold", "(0, 1)"),
        ("/edit", {"identity": SLUG, "prompt": "a", "weights": {"a": 3}}, "weights.a", "-2..2"),
        ("/explain", {"identity": SLUG, "words": ["a"], "stage": -1}, "stage", "within [0, inf)"),
    ]:
        r = api.post(path, json=body)
        assert r.status_code == 400, (field, r.text)
        assert r.json()["detail"].startswith(f"{field}: ") and words in r.json()["detail"], (field, r.text)
    assert api.get("/jobs").json() == []
    r = api.post(f"/identities/{SLUG}/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["detail"]


def test_openapi_documents_the_settings_with_their_ranges(api):
    import httpx

    spec = httpx.get(str(api.base_url).split(API_PREFIX)[0] + "/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for name in ("GenerateSettings", "SourceSettings"):
        assert schemas[name].get("additionalProperties") is False
        steps = schemas[name]["properties"]["steps"]
        steps = next((o for o in steps.get("anyOf", [steps]) if o.get("type") == "integer"), steps)
        assert (steps["minimum"], steps["maximum"]) == (1, 500)
    generate = spec["paths"][f"{API_PREFIX}/identities/{{slug}}/generate"]["post"]
    assert "400" in generate["responses"]


# ---------------------------------------------------------------- mounted in the WebUI (its own error handlers)
def webui_app():
    """The WebUI's app as ``modules/api/api.py: api_middleware`` leaves it: its handlers answer every exception
    with ``{"error", "detail", "body", "errors"}`` and the exception's status (500 when it has none)."""
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import HTTPException
    from fastapi.responses import JSONResponse

    app = fastapi.FastAPI()

    def handle(request, e):
        err = {"error": type(e).__name__, "detail": vars(e).get("detail", ""), "body": vars(e).get("body", ""),
               "errors": str(e)}
        return JSONResponse(status_code=vars(e).get("status_code", 500), content=jsonable_encoder(err))

    @app.exception_handler(Exception)
    async def any_exception(request, e):
        return handle(request, e)

    @app.exception_handler(HTTPException)
    async def http_exception(request, e):
        return handle(request, e)

    return app


def test_mounted_in_the_webui_bad_settings_are_a_400_too(tmp_path):
    try:
        from standins import webui as standin
    except ImportError:
        from tests.standins import webui as standin

    with standin.installed(tmp_path / "webui"):
        from lib_profile.webui import register

        app = webui_app()
        register.app_started(None, app)
        client = TestClient(app)
        for route, model in MODELS.items():
            for name, value in cases(model)[::3]:
                path, body = request_body(route, {name: value})
                r = client.post(API_PREFIX + path, json=body)
                assert r.status_code == 400, (route, name, r.text)
                assert f"settings.{name}" in r.json()["detail"] and range_words(model, name) in r.json()["detail"]


# ---------------------------------------------------------------- the command line
@pytest.mark.parametrize("argv, field", [
    (["generate", "--steps", "0"], "settings.steps"),
    (["generate", "--width", "100"], "settings.width"),
    (["generate", "--settings", '{"count": 5}'], "settings.count"),
    (["generate", "--settings", '{"cfg_scale": "high"}'], "settings.cfg_scale"),
    (["generate", "--settings", "not json"], "--settings"),
    (["generate", "--settings", "[1]"], "--settings"),
    (["explain", "--prompt", "a", "--word", "a", "--hires-scale", "9"], "settings.hires_scale"),
    (["edit", "--prompt", "a", "--target", "b", "--clip-skip", "13"], "settings.clip_skip"),
    (["edit", "--prompt", "a", "--target", "b", "--settings", '{"seed": 1}'], "settings.seed"),
])
def test_cli_refuses_bad_settings_with_exit_2_naming_the_field(argv, field, tmp_path, capsys):
    from lib_profile import cli

    code = cli.main([argv[0], "--checkpoint", "tiny", "--out", str(tmp_path / "out"), *argv[1:]])
    err = capsys.readouterr().err
    assert code == 2 and field in err, err
    assert not (tmp_path / "out").exists()


def test_cli_options_are_the_models_fields():
    from lib_profile import cli

    args = cli.build_parser().parse_args(["generate", "--checkpoint", "tiny", "--out", "x", "--cfg-scale", "5",
                                          "--settings", '{"steps": 9, "cfg_scale": 3}'])
    from lib_profile.studio.settings import from_arguments

    assert from_arguments(args, PlanSettings) == {"steps": 9, "cfg_scale": 5.0}
    for name in validation.schema(SourceSettings)["properties"]:
        args = cli.build_parser().parse_args(["explain", "--checkpoint", "t", "--out", "x", "--prompt", "a",
                                              "--word", "a"])
        assert hasattr(args, name)


# ---------------------------------------------------------------- the tab
def test_tab_generate_refuses_bad_steps_naming_the_field(host, tmp_path, monkeypatch):
    from lib_profile.service import Studio
    from lib_profile.ui.tab import build_tab

    try:
        from test_tab_handlers import handler
    except ImportError:
        from tests.test_tab_handlers import handler

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    s = Studio(host, tmp_path / "data")
    try:
        s.create_identity(NAME)
        blocks = build_tab(lambda: s)
        for steps in (0, 501):
            out = handler(blocks, "do_generate")(SLUG, "three_quarter_left", None, "cool", 1, 5, False,
                                                 "512 x 768 (SD1.5 2:3)", steps)
            assert "settings.steps" in out[0] and "1..500" in out[0], out
        assert s.jobs.list(SLUG) == []
    finally:
        s.close()


# ---------------------------------------------------------------- infotext: the settings used, written and read back
def png_text(path) -> str:
    with Image.open(path) as im:
        return im.text["parameters"]


def test_a_portraits_infotext_holds_its_settings(host, tmp_path):
    from lib_profile.studio.plan import build_plan
    from lib_profile.studio.run import run_plan
    from lib_profile.studio.settings import plan_settings

    settings = {"width": 64, "height": 96, "steps": 2, "cfg_scale": 5.5, "sampler": "DPM++ 2M",
                "scheduler": "Karras", "clip_skip": 1}
    off = {k: False for k in ("detail", "refine", "detail2", "upscale", "grade")}
    plan = build_plan("a portrait", None, None, "neutral", 1, 7, off, **check(PlanSettings, settings))
    result = run_plan(plan, host, tmp_path)
    text = png_text(tmp_path / result["images"][0]["file"])
    assert from_infotext(text, PlanSettings) == settings == plan_settings(plan)
    assert "Profile Studio settings: " in text and "Steps: 2" in text


def test_a_hires_images_infotext_reads_back_from_the_webuis_own_fields(host):
    from lib_profile.hosts.base import Txt2ImgRequest

    settings = {"width": 64, "height": 64, "steps": 2, "cfg_scale": 4.0, "sampler": "Euler", "scheduler": "Karras",
                "clip_skip": 2, "hires_scale": 2.0, "hires_steps": 1, "hires_denoising": 0.5,
                "hires_upscaler": "Latent"}
    req = Txt2ImgRequest(prompt="a portrait", seed=3, **check(SourceSettings, settings))
    text = host.txt2img(req).infotexts[0]
    assert from_infotext(text) == settings


def test_infotext_settings_that_do_not_fit_are_refused():
    bad = 'x\nSteps: 2, Profile Studio settings: "' + json.dumps({"steps": 0}).replace('"', '\\"') + '"'
    with pytest.raises(SettingsError, match="settings.steps"):
        from_infotext(bad)


def _open_bounds(model) -> list[tuple[str, str, float]]:
    """(field, "gt" or "lt", bound) for every open bound the model declares, read from pydantic's field
    declarations (not from the JSON schema the message words come from)."""
    out = []
    if validation.PYDANTIC_2:
        for name, field in model.model_fields.items():
            metas = list(field.metadata)
            ann = field.annotation
            for arg in getattr(ann, "__args__", ()) or ():  # Optional[confloat(...)]
                metas += list(getattr(arg, "__metadata__", ()))
            for meta in metas:
                for kind in ("gt", "lt"):
                    if getattr(meta, kind, None) is not None:
                        out.append((name, kind, getattr(meta, kind)))
    else:
        for name, field in model.__fields__.items():
            for source in (field.field_info, field.type_):
                for kind in ("gt", "lt"):
                    if getattr(source, kind, None) is not None:
                        out.append((name, kind, getattr(source, kind)))
    return sorted(set(out))


def test_every_open_bound_is_said_open_in_the_refusal():
    """pydantic 1's OpenAPI 3.0 schema writes ``gt=0`` as ``minimum: 0`` (api/nullable.py); the refusal of the bound
    itself must still say the range is open there, for every field of every request model, on both pydantic."""
    import pydantic

    from lib_profile.api import models as api_models
    from lib_profile.studio import settings as studio_settings

    found = []
    for module in (api_models, studio_settings):
        for model in vars(module).values():
            if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)
                    and model.__module__ == module.__name__):
                continue
            for name, kind, bound in _open_bounds(model):
                found.append((model.__name__, name))
                with pytest.raises(validation.Invalid) as err:
                    validation.parse(model, {name: bound})
                line = next(x for x in str(err.value).splitlines() if x.startswith(f"{name}: "))
                said = f"({bound:g}" if kind == "gt" else f"{bound:g})"
                assert said in line and f"{bound:g}.." not in line and f"..{bound:g}" not in line, (model, line)
    # the table is not empty: the fields known to have open bounds are among those checked
    assert {("TrainRequest", "alpha"), ("TrainRequest", "learning_rate"), ("EditRequest", "blend_threshold"),
            ("SourceSettings", "hires_denoising")} <= set(found), found
