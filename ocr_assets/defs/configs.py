"""Dagster run configs generated from the typed settings (ocr_assets.settings): same names, defaults and help
text as the CLI; Dagster refuses unknown keys. Fields a resource decides (device, checkpoint folder) are left out."""


import dataclasses
import typing

import dagster as dg
import pydantic

from ocr_assets import settings as s


def config_class(cls: type, name: str, exclude: tuple[str, ...] = (), **extra) -> type[dg.Config]:
    """A dg.Config with one field per settings field (minus `exclude`), plus `extra` fields (type, default, help)."""
    hints = typing.get_type_hints(cls)
    fields = {}
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        fields[f.name] = (hints[f.name], pydantic.Field(default=default, description=f.metadata.get("help")))
    for key, (kind, default, help_text) in extra.items():
        fields[key] = (kind, pydantic.Field(default=default, description=help_text))
    return pydantic.create_model(name, __base__=dg.Config, __doc__=cls.__doc__, **fields)


def to_settings(config: dg.Config, cls: type, **values):
    """The settings object behind a generated config (extra fields dropped, resource values added)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in config.model_dump().items() if k in names}, **values)


FinetuneConfig = config_class(s.FinetuneSettings, "FinetuneConfig", exclude=("device", "checkpoint_dir"))
CrossValidationConfig = config_class(
    s.FinetuneSettings, "CrossValidationConfig", exclude=("device", "checkpoint_dir", "epochs"),
    epochs=(int, 3, "passes per fold (few: one fine-tune per document)"),
    max_documents=(int, 6, "at most this many held-out documents"),
)
PretrainConfig = config_class(s.PretrainSettings, "PretrainConfig", exclude=("device",))
ScratchConfig = config_class(s.ScratchSettings, "ScratchConfig")
GateConfig = config_class(s.GateSettings, "GateConfig")


class BaseModelConfig(dg.Config):
    """Where the base model comes from: a model spec (else the champion, else the shipped model), or from scratch."""

    model: typing.Optional[str] = pydantic.Field(
        default=None, description="model directory or models:/NAME@ALIAS; empty: the champion if any, else the shipped model")
    from_scratch: bool = pydantic.Field(default=False, description="train a compact model from scratch on the train split")
    scratch: ScratchConfig = pydantic.Field(default_factory=ScratchConfig, description="settings of a from-scratch base")
