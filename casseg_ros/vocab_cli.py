"""`casseg-vocab`: build a class vocabulary once, offline of the robot's per-frame path.

    casseg-vocab --names my_classes.yaml --out models/vocab.safetensors      (a YAML file of yours: shapes below)
    casseg-vocab --names road,car,sky --provider openai --describe --out models/vocab.safetensors
    casseg-vocab bake models/casseg_demo.safetensors --names road,car,person --out models/rcp.safetensors
    casseg-vocab recolor old.safetensors --out new.safetensors [--colors road=#804080 car=0,0,142]

`--names` is a YAML file or a comma-separated list. Accepted YAML shapes: a list of names; a list
of `{name: ..., description: ..., color: ...}` mappings; a mapping `{id: name}`; or any of those
under a top-level `classes:` or `names:` key. Descriptions from the file (or `bake --descriptions`,
one per name) are embedded as `"{name}: {description}"`.

Colours: each class gets its name's usual colour (Cityscapes, ADE20K, COCO; else one made from the
name: `casseg_ros.perception.palette`); a `color:` in the file (`"#rrggbb"` or `[r, g, b]`) or
`--colors NAME=#rrggbb|r,g,b ...` sets it yourself. `recolor` writes a copy of a checkpoint with
those colours and nothing else changed (names, text embeddings, weights): a checkpoint made before
colours went by name keeps its stored colours until recoloured.

`bake` writes a COPY of a checkpoint whose classes are the new names, embedded with the provider
the checkpoint's vocabulary was built with (`--provider` to override); the weights are unchanged
(`casseg_ros.model.checkpoint.bake_vocabulary`). This CLI stands above `casseg_ros.text` and
`casseg_ros.model` (it reads checkpoints) and is a leaf: nothing imports it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from casseg_ros.model.checkpoint import CheckpointError, bake_vocabulary, read_vocabulary
from casseg_ros.perception.palette import palette_for_names, parse_color, parse_color_assignments
from casseg_ros.text.build import DEFAULT_DESCRIPTION_TEMPLATE, DEFAULT_TEMPLATE, build_vocabulary
from casseg_ros.text.providers import (
    DEFAULT_CHAT_MODEL,
    DEFAULT_EMBEDDING_MODEL,
    PROVIDERS,
    EmbeddingProviderError,
)
from casseg_ros.text.vocabulary import Vocabulary, VocabularyError

Colors = dict[str, tuple[int, int, int]]


def _parse_entries(data: Any, source: str) -> tuple[list[str], list[str] | None, Colors]:
    if isinstance(data, dict):
        for key in ("classes", "names"):
            if key in data:
                return _parse_entries(data[key], source)
        try:
            items = sorted(data.items(), key=lambda kv: int(kv[0]))
        except (TypeError, ValueError):
            raise ValueError(f"{source}: expected a list of classes, a {{id: name}} mapping, "
                             "or a 'classes:' key") from None
        return _parse_entries([v for _, v in items], source)
    if not isinstance(data, list) or not data:
        raise ValueError(f"{source}: expected a non-empty list of class names")
    names: list[str] = []
    descriptions: list[str | None] = []
    colors: Colors = {}
    for entry in data:
        if isinstance(entry, dict):
            if "name" not in entry:
                raise ValueError(f"{source}: class entry without 'name': {entry}")
            names.append(str(entry["name"]))
            descriptions.append(None if entry.get("description") is None else str(entry["description"]))
            if entry.get("color") is not None:
                try:
                    colors[names[-1]] = parse_color(entry["color"])
                except ValueError as exc:
                    raise ValueError(f"{source}: class {names[-1]!r}: {exc}") from None
        else:
            names.append(str(entry))
            descriptions.append(None)
    if all(d is None for d in descriptions):
        return names, None, colors
    if any(d is None for d in descriptions):
        missing = [n for n, d in zip(names, descriptions) if d is None]
        raise ValueError(f"{source}: either every class has a description or none; missing for {missing}")
    return names, [str(d) for d in descriptions], colors


def load_class_names(spec: str) -> tuple[list[str], list[str] | None, Colors]:
    """Names, descriptions (if the file has them) and the colours it sets, from a YAML path or 'a,b,c'."""
    path = Path(spec)
    if spec.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise ValueError(f"class file not found: {path}")
        with path.open("r", encoding="utf-8") as handle:
            return _parse_entries(yaml.safe_load(handle), str(path))
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise ValueError("--names is empty")
    return names, None, {}


def _add_provider_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--describe", action="store_true",
                        help="openai: have the chat model describe each class, embed name + description")
    parser.add_argument("--template", default=DEFAULT_TEMPLATE, help="prompt for a bare class name")
    parser.add_argument("--description-template", default=DEFAULT_DESCRIPTION_TEMPLATE)
    parser.add_argument("--model-path", help="local: sentence-transformers model directory")
    parser.add_argument("--device", default="cpu", help="local: torch device")
    parser.add_argument("--base-url", help="openai: API base URL (default: the client's)")
    parser.add_argument("--embedding-model", default=DEFAULT_EMBEDDING_MODEL)
    parser.add_argument("--chat-model", default=DEFAULT_CHAT_MODEL)
    parser.add_argument("--timeout", type=float, default=30.0, help="openai: seconds per request")
    parser.add_argument("--max-attempts", type=int, default=4, help="openai: requests per call")
    parser.add_argument("--from-file", type=Path, help="file: cached vocabulary to check and copy")
    _add_color_option(parser)


def _add_color_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--colors", nargs="+", metavar="NAME=COLOR",
                        help="colours you choose (#rrggbb or r,g,b); the other classes get their name's usual colour")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="casseg-vocab", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", required=True, help="YAML class file or comma-separated names")
    parser.add_argument("--provider", default="local", choices=sorted(PROVIDERS))
    parser.add_argument("--out", required=True, type=Path, help="output .safetensors file")
    _add_provider_options(parser)
    return parser


def bake_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="casseg-vocab bake",
                                     description="write a copy of a checkpoint with new classes (weights unchanged)")
    parser.add_argument("checkpoint", type=Path, help="source checkpoint (.safetensors or .pt); never modified")
    parser.add_argument("--names", required=True, help="YAML class file or comma-separated names")
    parser.add_argument("--descriptions", nargs="+", help="one sentence per name, in the order of --names")
    parser.add_argument("--provider", choices=sorted(PROVIDERS),
                        help="embedding provider (default: the one the checkpoint's vocabulary was built with)")
    parser.add_argument("--out", required=True, type=Path, help="the new checkpoint (.safetensors)")
    _add_provider_options(parser)
    return parser


def recolor_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="casseg-vocab recolor",
                                     description="write a copy of a checkpoint whose class colours follow the class "
                                                 "names (or --colors); names, embeddings and weights unchanged")
    parser.add_argument("checkpoint", type=Path, help="source checkpoint (.safetensors or .pt); never modified")
    parser.add_argument("--out", required=True, type=Path, help="the new checkpoint (.safetensors)")
    _add_color_option(parser)
    return parser


def _palette(names: list[str], file_colors: Colors, color_options: Sequence[str] | None):
    """The palette of the classes: --colors over the file's colours over the names' own."""
    return palette_for_names(names, {**file_colors, **parse_color_assignments(color_options)})


def _provider_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    if args.provider == "local":
        kwargs: dict[str, Any] = {"device": args.device}
        if args.model_path:
            kwargs["model_path"] = args.model_path
        return kwargs
    if args.provider == "openai":
        return {"base_url": args.base_url, "embedding_model": args.embedding_model,
                "chat_model": args.chat_model, "timeout": args.timeout,
                "max_attempts": args.max_attempts}
    if args.from_file is None:
        raise ValueError("--provider file needs --from-file PATH")
    return {"path": args.from_file}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bake"]:
        return _bake(bake_parser().parse_args(argv[1:]))
    if argv[:1] == ["recolor"]:
        return _recolor(recolor_parser().parse_args(argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        names, descriptions, colors = load_class_names(args.names)
        vocab = build_vocabulary(names, args.provider, descriptions, describe=args.describe,
                                 template=args.template,
                                 description_template=args.description_template,
                                 palette=_palette(names, colors, args.colors), **_provider_kwargs(args))
        vocab.save(args.out)
    except (ValueError, EmbeddingProviderError, VocabularyError, OSError) as exc:
        print(f"casseg-vocab: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {len(vocab)} classes, embedding dim {vocab.embedding_dim}, "
          f"provider {vocab.provider}" + (", with descriptions" if vocab.descriptions else ""))
    return 0


def _bake(args: argparse.Namespace) -> int:
    try:
        names, descriptions, colors = load_class_names(args.names)
        if args.descriptions is not None:
            if descriptions is not None:
                raise ValueError("descriptions come either from the --names file or from --descriptions, not both")
            descriptions = list(args.descriptions)
        args.provider = args.provider or read_vocabulary(args.checkpoint).provider
        if args.provider not in PROVIDERS:
            raise ValueError(f"the vocabulary of {args.checkpoint} was embedded by provider {args.provider!r}, "
                             f"which cannot embed new names; choose one with --provider ({', '.join(sorted(PROVIDERS))})"
                             f" that gives the model's embedding dimension")
        vocab = build_vocabulary(names, args.provider, descriptions, describe=args.describe, template=args.template,
                                 description_template=args.description_template,
                                 palette=_palette(names, colors, args.colors), **_provider_kwargs(args))
        out = bake_vocabulary(args.checkpoint, vocab, args.out)
    except (ValueError, EmbeddingProviderError, VocabularyError, CheckpointError, OSError) as exc:
        print(f"casseg-vocab bake: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}: {args.checkpoint.name} with {len(vocab)} classes ({', '.join(vocab.names)}), "
          f"provider {vocab.provider}")
    return 0


def _recolor(args: argparse.Namespace) -> int:
    try:
        old = read_vocabulary(args.checkpoint)
        palette = _palette(old.names, {}, args.colors)
        vocab = Vocabulary(names=old.names, embeddings=old.embeddings, descriptions=old.descriptions,
                           provider=old.provider, palette=palette)
        out = bake_vocabulary(args.checkpoint, vocab, args.out)
    except (ValueError, VocabularyError, CheckpointError, OSError) as exc:
        print(f"casseg-vocab recolor: error: {exc}", file=sys.stderr)
        return 1
    changed = [n for n, a, b in zip(old.names, old.palette.tolist(), palette.tolist()) if a != b]
    print(f"wrote {out}: {args.checkpoint.name} with new colours for {len(changed)} of {len(old.names)} classes"
          + (f" ({', '.join(changed)})" if changed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
