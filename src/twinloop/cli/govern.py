"""``twinloop govern ...``: the four-layer report, privacy and drift checks, RO-Crate packaging."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

govern_app = typer.Typer(help="Governance: four-layer report, privacy, drift, RO-Crate.", no_args_is_help=True)
console = Console()

Product = Annotated[Path, typer.Argument(help="a product directory")]


def _opened(path: Path, field: str, same_as: Any = None) -> Any:
    """The checked product at ``path``; with ``same_as``, it must be of that product's model."""
    from twinloop.errors import InputError
    from twinloop.products.checked import open_product

    product = open_product(path, field)
    if same_as is not None and product.manifest["model"]["id"] != same_as.manifest["model"]["id"]:
        raise InputError(
            f"{field} '{path}' is a product of '{product.manifest['model']['id']}' but '{same_as.path}' is of "
            f"'{same_as.manifest['model']['id']}'; compare products of the same model."
        )
    return product


def _records(product: Any) -> Any:
    from twinloop.govern.records import subject_records

    return subject_records(product)


def demo_inputs(root: Path) -> dict[str, Path | None]:
    """Where ``twinloop demo`` put the artifacts a report of its NSCLC product covers."""
    learn = root / "learn"
    posteriors = sorted(p for p in learn.glob("npe-*") if (p / "npe").is_dir())  # the demo trains one
    found = {
        "product": root / "nsclc-product",
        "reference": learn / "nsclc-real-like",
        "predictor": learn / "responder",
        "posterior": posteriors[0] if posteriors else learn / "npe",
        "registry": root / "twins.db",
    }
    return {k: (v if v.exists() else None) for k, v in found.items()}


@govern_app.command("report")
def report(
    artifact: Annotated[Path, typer.Argument(help="a product directory, or a `twinloop demo` output directory")],
    out: Annotated[Path, typer.Option("--out", help="the HTML report (the JSON is written beside it)")],
    reference: Annotated[Path | None, typer.Option(help="reference (real or real-like) product")] = None,
    predictor: Annotated[Path | None, typer.Option(help="folder of `twinloop learn predictor`")] = None,
    posterior: Annotated[Path | None, typer.Option(help="folder of `twinloop learn posterior`")] = None,
    registry: Annotated[str | None, typer.Option(help="twin registry URL or SQLite file (audit log)")] = None,
    n_attacks: Annotated[int, typer.Option(help="anonymeter attacks per risk")] = 300,
) -> None:
    """Mechanistic core, data product, AI components and clinical workflow, as HTML and JSON."""
    from twinloop._config import progress_shown

    found: dict[str, Path | None] = demo_inputs(artifact) if (artifact / "summary.json").is_file() else {}
    product = found.get("product") or artifact
    given = {"reference": reference, "predictor": predictor, "posterior": posterior}
    paths = {k: v if v is not None else found.get(k) for k, v in given.items()}
    registry = registry or (str(found["registry"]) if found.get("registry") else None)
    summary = write_report(product, out, paths, registry, n_attacks, progress_shown())
    table = Table(title=f"governance report -> {out}")
    table.add_column("section")
    table.add_column("headline")
    for row in summary:
        table.add_row(*row)
    console.print(table)


def write_report(
    product: Path, out: Path, paths: dict[str, Path | None], registry: str | None, n_attacks: int, progress: bool
) -> list[tuple[str, str]]:
    """Build the report, write ``out`` (HTML), its JSON and PROV graph; return headline rows."""
    from twinloop._atomic import write_atomic
    from twinloop._provenance import Activity, Source
    from twinloop._secrets import mask_url
    from twinloop.govern.html_report import render
    from twinloop.govern.report import ReportInputs, build_report, write_json

    registry = _check_report_inputs(product, out, paths, registry, n_attacks)
    audit, twin_versions = _registry_inputs(registry) if registry else (None, [])
    used = [Source.artifact(p, role) for role, p in (("product", product), *paths.items()) if p is not None]
    used += twin_versions
    settings = {"n_attacks": n_attacks, "registry": mask_url(registry)}
    activity = Activity("governance-report", settings=settings, used=used)
    inputs = ReportInputs(product, paths["reference"], paths["predictor"], paths["posterior"], audit=audit,
                          n_attacks=n_attacks)  # fmt: skip
    result = build_report(inputs, progress=progress)
    folder = out.parent
    folder.mkdir(parents=True, exist_ok=True)
    write_json(result, folder / "report.json")
    write_atomic(out, lambda tmp: Path(tmp).write_text(render(result)))
    activity.record(folder, "governance-report")
    return headlines(result)


def _check_report_inputs(
    product: Path, out: Path, paths: dict[str, Path | None], registry: str | None, n_attacks: int
) -> str | None:
    """Refuse a bad input of ``govern report`` before the (long) report is built; return the registry URL."""
    from twinloop.govern import inputs
    from twinloop.learn.jobs import task_product

    inputs.check_n_attacks(n_attacks)
    inputs.check_file_out(out)
    opened = _opened(product, "ARTIFACT")
    reference = _opened(paths["reference"], "--reference", opened) if paths["reference"] else None
    if paths["predictor"] is not None:
        task = inputs.check_predictor(paths["predictor"])
        if reference is not None:
            task_product(reference, task, "--reference")
    if paths["posterior"] is not None:
        inputs.check_posterior(paths["posterior"])
    return inputs.registry_url(registry) if registry else None


def _registry_inputs(registry: str) -> tuple[Any, list[Any]]:
    """The registry's audit log, and the current version of every twin as a PROV input of the report."""
    import pandas as pd
    from sqlalchemy.exc import SQLAlchemyError

    from twinloop._provenance import Source
    from twinloop.errors import RegistryError
    from twinloop.store.registry import TwinRegistry

    reg = TwinRegistry(registry)
    try:
        twins = [(str(row["id"]), int(row["current_version"])) for row in reg.twins().to_dict("records")]
        frames = [reg.table("audit", twin) for twin, _ in twins]
        versions = [Source("twin", "twin-version", f"{twin} v{v}", reg.version_identity(twin)) for twin, v in twins]
    except SQLAlchemyError as err:
        raise RegistryError(
            f"The twin registry at {reg.where} could not be read ({type(err).__name__}); check that it is a twin "
            "registry and that its server is up."
        ) from None
    return (pd.concat(frames, ignore_index=True) if frames else None), versions


def headlines(result: dict[str, Any]) -> list[tuple[str, str]]:
    core, product, ai, clinical = result["core"], result["product"], result["ai"], result["clinical"]
    orders = ", ".join(f"{k} {v['observed_order']:.2f}" for k, v in core["verification"]["convergence"].items())
    rows = [
        (
            "core",
            f"convergence orders {orders}; verification {'passed' if core['verification']['passed'] else 'FAILED'}",
        )
    ]
    if "fidelity" in product:
        rows.append(("product", f"detection AUC {product['fidelity']['detection']['auc']:.3f}; "
                                f"max anonymeter risk {product['privacy']['max_risk']:.3f}"))  # fmt: skip
    if "performance" in ai:
        rows.append(
            (
                "ai",
                f"AUROC {ai['performance']['auroc']:.3f}; "
                f"drifted features: {', '.join(ai['drift']['shifted']) or 'none'}",
            )
        )
    rows.append(("clinical", clinical["verdict"]))
    return rows


@govern_app.command("privacy")
def privacy_command(
    real: Annotated[Path, typer.Argument(help="the real (training) product")],
    synthetic: Annotated[Path, typer.Argument(help="the synthetic product made from it")],
    holdout: Annotated[
        Path | None, typer.Option(help="real patients NOT used to make SYNTHETIC (else REAL is halved)")
    ] = None,
    quasi: Annotated[
        str | None, typer.Option(help="comma-separated quasi-identifiers (default: those of age, sex, weight present)")
    ] = None,
    secrets: Annotated[
        str | None, typer.Option(help="comma-separated secret columns (default: outcome columns)")
    ] = None,
    n_attacks: Annotated[int, typer.Option(help="anonymeter attacks per risk")] = 300,
    out: Annotated[Path | None, typer.Option(help="write the result as JSON here")] = None,
) -> None:
    """DCR and anonymeter risks (singling out, linkability, inference) of SYNTHETIC against REAL."""
    from twinloop.govern import inputs
    from twinloop.govern.privacy import privacy_report, split_halves
    from twinloop.govern.records import common_columns
    from twinloop.govern.report import QUASI_IDENTIFIERS

    def run() -> dict[str, Any]:
        inputs.check_n_attacks(n_attacks)
        inputs.check_file_out(out)
        real_product = _opened(real, "REAL")
        r, s = _records(real_product), _records(_opened(synthetic, "SYNTHETIC", real_product))
        train, hold = (r, _records(_opened(holdout, "--holdout", real_product))) if holdout else split_halves(r)
        n = min(len(train), len(hold))
        inputs.check_sizes({"REAL (training half)": len(train), "--holdout or REAL's other half": len(hold),
                            "SYNTHETIC": len(s)})  # fmt: skip
        train, hold = train.iloc[:n], hold.iloc[:n]
        shared = common_columns(r, s)
        quasi_ids = inputs.columns("--quasi", quasi, shared) or [q for q in QUASI_IDENTIFIERS if q in shared]
        chosen = (
            inputs.columns("--secrets", secrets, shared)
            or [c for c in ("best_change_pct", "pfs_days", "time_in_range_pct", "mean_glucose_mg_dl") if c in shared][
                :2
            ]
        )
        return privacy_report(r, s, quasi_identifiers=quasi_ids, secrets=chosen, train=train, holdout=hold,
                              n_attacks=n_attacks)  # fmt: skip

    result = run()
    table = Table(title="privacy risks (anonymeter: excess success on training over holdout patients)")
    for column in ("attack", "risk", "95 % interval"):
        table.add_column(column)
    an = result["anonymeter"]
    rows = [("singling out", an["singling_out"]), ("linkability", an["linkability"])]
    rows += [(f"inference: {k}", v) for k, v in an["inference"].items()]
    for name, value in rows:
        ci = value.get("ci95", [float("nan")] * 2)
        table.add_row(name, f"{value.get('risk', float('nan')):.3f}", f"{ci[0]:.3f}-{ci[1]:.3f}")
    dcr = result["dcr"]
    table.add_row("DCR: share closer to train", f"{dcr['share_closer_to_train']:.3f}", "0.5 = no memorization")
    console.print(table)
    if out:
        out.write_text(json.dumps(result, indent=2, default=str))


@govern_app.command("drift")
def drift_command(
    reference: Annotated[Path, typer.Argument(help="reference product (e.g. the training data)")],
    current: Annotated[Path, typer.Argument(help="current product (e.g. data seen in use)")],
    out: Annotated[Path | None, typer.Option(help="write the result as JSON here")] = None,
) -> None:
    """PSI and KS per feature of CURRENT's per-patient records against REFERENCE's."""
    from twinloop.govern.drift import drift
    from twinloop.govern.inputs import check_file_out
    from twinloop.govern.records import common_columns

    def run() -> dict[str, Any]:
        check_file_out(out)
        opened = _opened(reference, "REFERENCE")
        r, c = _records(opened), _records(_opened(current, "CURRENT", opened))
        return drift(r, c, common_columns(r, c))

    result = run()
    table = Table(title=f"drift of {current} against {reference}")
    for column in ("feature", "PSI", "level", "KS", "KS p"):
        table.add_column(column)
    for feature, v in result["features"].items():
        table.add_row(feature, f"{v['psi']:.3f}", v["level"], f"{v.get('ks', float('nan')):.3f}",
                      f"{v.get('ks_p', float('nan')):.2g}")  # fmt: skip
    console.print(table)
    if out:
        out.write_text(json.dumps(result, indent=2, default=str))


@govern_app.command("crate")
def crate(
    product: Product,
    out: Annotated[Path, typer.Option("--out", help="new directory for the RO-Crate")],
) -> None:
    """Package a product (files, manifest, PROV graph) as an RO-Crate."""
    from twinloop.errors import InputError
    from twinloop.govern.crate import package
    from twinloop.learn.outdir import artifact_folder

    def run() -> Path:
        _opened(product, "PRODUCT")
        if out.exists():
            kind = "folder" if out.is_dir() else "file"
            raise InputError(f"--out '{out}' already exists (a {kind}); give a new folder for the crate.")
        with artifact_folder(out):
            return package(product, out)

    target = run()
    console.print(f"wrote RO-Crate {target}/ro-crate-metadata.json")
