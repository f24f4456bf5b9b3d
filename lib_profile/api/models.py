"""Request and response models of the HTTP API.

Written for pydantic 1 (A1111) and 2 (Forge) alike: every optional field is ``Optional[...] = None``,
no ``model_config``/``Config`` (unknown fields are refused by class keyword, ``extra="forbid"``, which both take),
free-form parts are plain ``dict``. Numbers carry their ranges (``ge``/``le``), shown in the OpenAPI schema and
in the 400 a value outside them gets. The generation ``settings`` are :mod:`lib_profile.studio.settings`' models.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from pydantic import BaseModel, Field, confloat, conint

from lib_profile.service.photo_settings import MAX_CAPTION, InversionSettings
from lib_profile.studio.settings import GenerateSettings, SourceSettings

SEED_MAX = 2**32 - 1

from lib_profile.api.nullable import mark_nullable


class VersionResponse(BaseModel):
    """What ``GET /version`` answers."""

    name: str = Field(description="Name of the extension.")
    version: str = Field(description="Version of the extension.")
    api: int = Field(1, description="Version of this HTTP API; raised on incompatible changes.")
    host: Optional[str] = Field(None, description="What turns plans into pixels: a1111, forge or diffusers.")


class IdentityCreate(BaseModel):
    name: str = Field(description="Display name of the person, e.g. 'Alice'; 1-40 characters, no '/' or '..'.")
    class_word: str = Field("person", description="woman, man or person: the class the LoRA is trained on.")


class LoraInfo(BaseModel):
    name: str = Field(description="LoRA name as used in prompts: <lora:NAME:0.9>.")
    file: str = Field(description="File name in the LoRA folder's profile-studio/<identity>/ subfolder.")
    created: float = Field(description="Unix time the training finished.")
    activation_text: Optional[str] = Field(None, description="Words that call the person up, e.g. 'ohwx woman'.")
    identity_similarity: Optional[float] = Field(None, description="Mean identity similarity of the chosen checkpoint's validation portraits.")
    run: Optional[str] = Field(None, description="The training run folder it came from.")


class IdentitySummary(BaseModel):
    slug: str = Field(description="The identity's id in URLs (lower-case name).")
    name: str = Field(description="Display name.")
    class_word: str = Field(description="woman, man or person.")
    created: float = Field(description="Unix time of creation.")
    loras: int = Field(0, description="How many LoRAs were trained.")


class OutputSet(BaseModel):
    job: str = Field(description="The generation job that made the set.")
    images: List[str] = Field(description="Portrait file names; fetch with GET /files/{slug}/{job}/{name}.")


class IdentityInfo(BaseModel):
    slug: str = Field(description="The identity's id in URLs.")
    name: str = Field(description="Display name.")
    class_word: str = Field(description="woman, man or person.")
    token: str = Field(description="The rare token the LoRA binds the face to.")
    created: float = Field(description="Unix time of creation.")
    photos: List[str] = Field(description="Uploaded photo file names.")
    intake: Optional[dict] = Field(None, description="The last intake report (per photo: status, reasons, face, identity similarity).")
    loras: List[LoraInfo] = Field(description="Trained LoRAs, oldest first; generation uses the newest unless told.")
    jobs: List[str] = Field(description="Ids of the identity's jobs, newest first.")
    outputs: List[OutputSet] = Field(description="Portrait sets made, newest first.")


class ImageUpload(BaseModel):
    name: str = Field("photo.jpg", description="File name (only its last part is kept).")
    data: str = Field(description="The file's bytes, base64 (a data: URL prefix is allowed).")


class PhotosUpload(BaseModel):
    images: List[ImageUpload] = Field(description="About 10 photos of the person: JPEG, PNG, WebP, HEIC...")


class IntakeReport(BaseModel):
    ready: bool = Field(description="Enough good photos to train.")
    counts: dict = Field(description="total, accepted, rejected, by_reason.")
    next_step: Optional[str] = Field(None, description="What to do next, in words.")
    photos: List[dict] = Field(description="Per photo: file, status, reasons (code, message), face, identity_similarity.")
    contact_sheet: Optional[str] = Field(None, description="URL of the contact sheet PNG.")


class TrainRequest(BaseModel, extra="forbid"):
    steps: Optional[int] = Field(None, ge=1, le=100000, description="Training steps, 1..100000 (default 800).")
    rank: Optional[int] = Field(None, ge=1, le=256, description="LoRA rank, 1..256 (default 32).")
    alpha: Optional[float] = Field(None, gt=0, le=1024, description="LoRA alpha, within (0, 1024] (default 32).")
    learning_rate: Optional[float] = Field(None, gt=0, lt=1, description="Learning rate, within (0, 1) (default 1e-4).")
    batch_size: Optional[int] = Field(None, ge=1, le=64, description="Batch size, 1..64 (default 4).")
    resolution: Optional[int] = Field(None, ge=64, le=1024, multiple_of=64,
                                      description="Training resolution, a multiple of 64 within 64..1024 (default: the "
                                      "checkpoint family's, 512 for SD1.5, 1024 for SDXL; 768 suits small cards).")
    seed: Optional[int] = Field(None, ge=0, le=SEED_MAX, description="Seed; the same seed and photos give the same LoRA.")
    validate_every: Optional[int] = Field(None, ge=1, le=100000, description="Render and score validation portraits every N steps (default 100).")
    validation_images: Optional[int] = Field(None, ge=0, le=64, description="Validation portraits per checkpoint, 0..64 (default 4).")
    validation_steps: Optional[int] = Field(None, ge=1, le=500, description="Sampling steps of a validation portrait, 1..500 (default 20).")
    validation_size: Optional[int] = Field(None, ge=64, le=1024, multiple_of=8, description="Validation portrait size, a multiple of 8 within 64..1024 (default: the resolution).")
    select: Optional[str] = Field(None, description="best, last or topK (average of the K best checkpoints; default top3).")
    save_every: Optional[int] = Field(None, ge=1, le=100000, description="Write a resumable state every N steps (default 50).")
    log_every: Optional[int] = Field(None, ge=1, le=100000, description="Log the loss every N steps (default 10).")
    device: Optional[str] = Field(None, description="cpu or cuda (default: cuda when available).")
    identity_in_lora: Optional[bool] = Field(None, description="Keep the person's face embedding in the LoRA file's "
                                             "metadata (default: the setting, else yes); it always stays in the "
                                             ".identity.json beside the LoRA.")
    low_memory: Optional[bool] = Field(None, description="The low-memory mode, for SDXL on a 12 GB card: gradient "
                                       "checkpointing, 8-bit AdamW when bitsandbytes is installed, the frozen text "
                                       "encoders on the CPU (default no).")
    checkpoint: Optional[str] = Field(None, description="SD1.5 or SDXL checkpoint file to train on (default: the one in use).")


class PortraitOptions(BaseModel):
    """What a set of portraits is made with: the fields ``generate`` and the one-call ``portraits`` share."""

    pose: Optional[str] = Field(None, description="A pose template name (GET /poses); none = pose by prompt.")
    pose_photo: Optional[str] = Field(None, description="Or a reference photo, base64: its pose is used.")
    tone: str = Field("warm", description="warm, cool, neutral or a user preset (GET /tones).")
    count: int = Field(4, ge=1, le=100, description="How many portraits, 1..100.")
    seed: int = Field(-1, ge=-1, le=SEED_MAX, description="First seed (-1: random); portrait n uses seed + n.")
    prompt: Optional[str] = Field(None, description="What to make (default: a studio portrait of the person).")
    lora_weight: float = Field(0.9, ge=-4, le=4, description="LoRA weight, -4..4.")
    switches: Optional[Dict[str, bool]] = Field(None, description="Stages on/off: detail, refine, detail2, upscale, grade.")
    settings: Optional[GenerateSettings] = Field(None, description="Plan settings: width, height, steps, cfg_scale, sampler, scheduler, clip_skip, negative_prompt, controlnet_pose, controlnet_tile; unknown ones are refused.")
    detail_engine: Optional[str] = Field(None, description="Face detail by 'builtin' or the 'adetailer' extension (WebUI only); default: the setting, else builtin.")


class GenerateRequest(PortraitOptions):
    lora: Optional[str] = Field(None, description="Which of the identity's LoRAs (default: the newest).")


class JobInfo(BaseModel):
    id: str = Field(description="Job id.")
    kind: str = Field(description="train, generate, portraits, explain, edit or restyle.")
    identity: Optional[str] = Field(None, description="The identity's slug.")
    state: str = Field(description="queued, running, done, failed, cancelled or interrupted.")
    stage: Optional[str] = Field(None, description="What it is doing now.")
    progress: float = Field(description="0 to 1.")
    eta_s: Optional[float] = Field(None, description="Seconds left, estimated.")
    messages: List[str] = Field(description="Notes and errors, in order.")
    result: Optional[dict] = Field(None, description="When done: the LoRA (train), the portraits (generate), the word maps (explain), source and edited image (edit), or photo, reconstruction and restyled image (restyle).")
    error: Optional[str] = Field(None, description="Why it failed.")
    created: float = Field(description="Unix time queued.")
    started: Optional[float] = Field(None, description="Unix time started.")
    finished: Optional[float] = Field(None, description="Unix time ended.")
    links: Optional[Dict[str, str]] = Field(None, description="URLs: self, cancel, resume, images.")


class DeleteResponse(BaseModel):
    deleted: str = Field(description="The identity's slug.")
    removed: List[str] = Field(description="Folders removed.")


class PoseInfo(BaseModel):
    name: str
    title: str
    description: str
    framing: str
    thumbnail: str = Field(description="URL of the thumbnail PNG.")


class ToneInfo(BaseModel):
    name: str
    title: str
    description: str
    sampler: str
    scheduler: str


class ExplainRequest(BaseModel):
    identity: str = Field(description="The identity (slug) whose portrait or LoRA it is.")
    words: List[str] = Field(description="Words or phrases of the prompt to map: whole words, any case (\"hair\" is not found in \"hairband\"); every place of a repeated word, or \"word#2\" for its second.")
    job: Optional[str] = Field(None, description="A generate job; with image: explain that portrait's first pass.")
    image: Optional[str] = Field(None, description="A portrait file of that job, e.g. 000-42.png.")
    prompt: Optional[str] = Field(None, description="Or: a new prompt (with the identity's newest LoRA).")
    seed: int = Field(-1, ge=-1, le=SEED_MAX, description="Seed for a new prompt (-1: random).")
    settings: Optional[SourceSettings] = Field(None, description="Plan settings for a new prompt: width, height, steps, ..., and hires fix: hires_scale (1 = off), hires_steps, hires_denoising, hires_upscaler.")
    layers: Optional[List[conint(ge=0)]] = Field(None, description="Only cross-attention layers [first, last] (0-based).")
    steps: Optional[List[conint(ge=0)]] = Field(None, description="Only sampling steps [first, last] (0-based).")
    stage: Optional[int] = Field(None, ge=0, description="Explain a later pass of the portrait: the index of a detail or refine stage in its plan.json (default: the first pass).")
    hires: bool = Field(False, description="For a new prompt made with hires fix (settings {\"hires_scale\": 2, \"hires_steps\": 0, \"hires_denoising\": 0.5, \"hires_upscaler\": \"Latent\"}): map the hires pass instead of the first pass.")
    photo: Optional[str] = Field(None, description="Or: one of the identity's photos, by the name shown for it (GET /identities/{slug} lists them): a real photo, inverted.")
    photo_image: Optional[str] = Field(None, description="Or: a photo uploaded with the request, base64 (a data: URL prefix is allowed): JPEG, PNG, WebP, HEIC...")
    caption: Optional[str] = Field(None, max_length=MAX_CAPTION, description="A photo's caption, its source prompt (default: \"a photo of\" the person: their LoRA's activation text, else their class word).")
    inversion: Optional[InversionSettings] = Field(None, description="How a photo is inverted: method (direct, null-text, ddim), steps, cfg_scale, negative_prompt, clip_skip, size, null_text_iterations.")


class EditRequest(BaseModel):
    identity: str = Field(description="The identity (slug) whose portrait or LoRA it is.")
    target: Optional[str] = Field(None, description="The edited prompt (swap, refine); empty for reweight.")
    replace: Optional[Dict[str, str]] = Field(None, description="Or: words to replace in the source prompt, e.g. {\"red\": \"blue\"}: whole words, any case, every place (\"red#2\": the second only).")
    mode: str = Field("swap", description="swap (same words but the swapped ones), refine (words added or removed) or reweight.")
    job: Optional[str] = Field(None, description="A generate job; with image: edit that portrait's first pass.")
    image: Optional[str] = Field(None, description="A portrait file of that job, e.g. 000-42.png.")
    prompt: Optional[str] = Field(None, description="Or: a source prompt to make and edit (with the identity's newest LoRA).")
    seed: int = Field(-1, ge=-1, le=SEED_MAX, description="Seed for a new prompt (-1: random).")
    settings: Optional[SourceSettings] = Field(None, description="Plan settings for a new prompt: width, height, steps, ..., and hires fix: hires_scale (1 = off), hires_steps, hires_denoising, hires_upscaler (the edit holds in both passes).")
    cross_steps: float = Field(0.8, ge=0, le=1, description="tau: fraction of steps whose cross-attention comes from the source (0..1).")
    self_steps: float = Field(0.4, ge=0, le=1, description="Fraction of steps whose self-attention comes from the source (0..1).")
    weights: Optional[Dict[str, confloat(ge=-2, le=2)]] = Field(None, description="Word -> c in [-2, 2]: scale that word's attention (whole words; \"word#2\": its second place).")
    blend_words: Optional[List[str]] = Field(None, description="Local blend: change only where these words attend (whole words; \"word#2\": its second place).")
    blend_threshold: float = Field(0.3, gt=0, lt=1, description="Local blend mask threshold, within (0, 1).")
    finish: bool = Field(True, description="For a studio portrait: run its later passes (face detail, refine, upscale, colour) on the edit too, so source and edited are finished portraits (the edited passes are kept beside). Off: the edited pass only.")
    stage: Optional[int] = Field(None, ge=0, description="Edit a later pass of the portrait instead of its first: the "
                                 "index of its refine stage in plan.json (the refine prompt is the one edited).")
    photo: Optional[str] = Field(None, description="Or: one of the identity's photos, by the name shown for it (GET /identities/{slug} lists them): a real photo, inverted; its caption is the source prompt.")
    photo_image: Optional[str] = Field(None, description="Or: a photo uploaded with the request, base64 (a data: URL prefix is allowed): JPEG, PNG, WebP, HEIC...")
    caption: Optional[str] = Field(None, max_length=MAX_CAPTION, description="A photo's caption, the source prompt the edit edits (default: \"a photo of\" the person: their LoRA's activation text, else their class word).")
    inversion: Optional[InversionSettings] = Field(None, description="How a photo is inverted: method (direct, null-text, ddim), steps, cfg_scale, negative_prompt, clip_skip, size, null_text_iterations.")


class RestyleRequest(BaseModel, extra="forbid"):
    """Restyle a real photo (Plug-and-Play, ``POST /restyle``): the photo's layout in the target prompt's look."""

    identity: str = Field(description="The identity (slug) whose photo or LoRA it is.")
    target_prompt: str = Field(min_length=1, max_length=MAX_CAPTION, description="What the photo should become, e.g. \"studio portrait photo of ohwx woman, soft studio light\" (the tab fills in the studio style and tone).")
    photo: Optional[str] = Field(None, description="One of the identity's photos, by the name shown for it.")
    photo_image: Optional[str] = Field(None, description="Or: a photo uploaded with the request, base64 (a data: URL prefix is allowed): JPEG, PNG, WebP, HEIC...")
    caption: Optional[str] = Field(None, max_length=MAX_CAPTION, description="The photo's caption, its source prompt (default: \"a photo of\" the person: their LoRA's activation text, else their class word).")
    strength: float = Field(0.2, ge=0, le=1, description="How far from the photo, 0..1: 0 gives the photo back, 0.2 (default) keeps its layout (the paper's feature/attention injection 0.8/0.5), 1 keeps only its noise.")
    keep_person: bool = Field(True, description="Apply the identity's newest LoRA (weight 0.9) and measure the result's identity similarity (needs a trained LoRA).")
    inversion: Optional[InversionSettings] = Field(None, description="How the photo is inverted: method (direct, null-text, ddim), steps, cfg_scale, negative_prompt, clip_skip, size, null_text_iterations.")


class PortraitsRequest(PortraitOptions, extra="forbid"):
    """The whole flow in one call (``POST /portraits``): a new identity from its photos, its LoRA, its portraits."""

    name: str = Field(description="Display name of the new person, e.g. 'Alice', in any script (an identity of that "
                                  "name must not exist yet: use its own routes for it).")
    class_word: str = Field("person", description="woman, man or person: the class the LoRA is trained on.")
    images: List[ImageUpload] = Field(description="About 10 photos of the person, base64 (multipart: form field "
                                                  "'files', repeatable).")
    train: Optional[TrainRequest] = Field(None, description="Training settings (default: the user's settings).")


mark_nullable(globals())  # keep last: every model above, pydantic 1's OpenAPI says which fields may be null
