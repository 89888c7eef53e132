"""Integrity section: sha256 of every file, hash chain, signature, and what the run was
(config summary, package versions, data fingerprints, torch thread segments)."""

from __future__ import annotations

from typing import Any

from trustfl.audits.report.result import Finding, NotChecked, SectionResult
from trustfl.audits.report.settings import AuditSettings

__all__ = ["audit", "config_summary"]


def config_summary(config: dict[str, Any]) -> dict[str, Any]:
    """The few config values a reader wants first (missing ones are left out)."""
    def get(*path: str) -> Any:
        cur: Any = config
        for p in path:
            if not isinstance(cur, dict) or p not in cur:
                return None
            cur = cur[p]
        return cur

    out = {
        "name": get("name"), "seed": get("seed"), "model": get("model", "name"), "task": get("model", "task"),
        "lora_r": get("lora", "r"), "lora_top_layers": get("lora", "top_layers"), "data": get("data", "name"),
        "max_records": get("data", "max_records"), "clients": get("partition", "num_clients"),
        "partition": get("partition", "scheme"), "rounds": get("federation", "rounds"),
        "clients_per_round": get("federation", "clients_per_round"), "sampling": get("federation", "sampling"),
        "aggregator": get("server", "aggregator"),
        "pre": [s if isinstance(s, str) else (s.get("name") if isinstance(s, dict) else s)
                for s in (get("server", "pre") or [])] or None,
        "post": [s if isinstance(s, str) else (s.get("name") if isinstance(s, dict) else s)
                 for s in (get("server", "post") or [])] or None,
        "privacy": sorted(k for k, v in (get("privacy") or {}).items() if v) or None,
        "dedup": get("dedup", "enabled"),
    }
    known = {k for k in out}
    extra_sections = sorted(k for k in config if isinstance(config.get(k), dict) and k not in known
                            and k not in ("model", "lora", "partition", "client", "server", "federation"))
    if extra_sections:
        out["other_sections"] = extra_sections
    return {k: v for k, v in out.items() if v is not None}


def audit(run: Any, settings: AuditSettings) -> SectionResult:
    from trustfl.rundir import CorruptRunError, SignatureError, UnsignedRunError, chain_problems, verify_signature
    from trustfl.rundir.signing import signer

    res = SectionResult(name="integrity", status="pass", verdict="")
    manifest = run.manifest
    key = settings.options.get("public_key")
    problems: list[tuple[str, str]] = []
    report = None
    res.checked.append("sha256 and content of every file listed in manifest.json (RunDir.verify)")
    try:
        report = run.verify()
    except CorruptRunError as e:  # SignatureError included: problems name every bad file and field
        problems = list(e.problems)
    file_problems = [(p, r) for p, r in problems if not p.startswith("manifest.json")]
    manifest_problems = [(p, r) for p, r in problems if p.startswith("manifest.json")]
    for p, r in file_problems:
        res.findings.append(Finding(f"{p}: {r}", "fail", {"file": p, "reason": r}))

    # hash chain
    res.checked.append("hash chain over the round records")
    chain = chain_problems(manifest)
    for p, r in chain:
        res.findings.append(Finding(f"hash chain: {p}: {r}", "fail", {"where": p, "reason": r}))

    # signature
    signed_by = signer(manifest)
    signature: dict[str, Any] = {"signed_by": signed_by, "trusted_key_given": key is not None}
    res.checked.append("signature of manifest.json" + (" against the given public key" if key else ""))
    if key is not None:
        try:
            signature["verified_key_id"] = verify_signature(run.path, key)
            signature["status"] = "verified with the given key"
            res.findings.append(Finding(f"signature by {signed_by} verified with the given public key", "info"))
        except UnsignedRunError as e:
            signature["status"] = "unsigned (a public key was given)"
            res.findings.append(Finding("unsigned run, but a trusted public key was given", "fail",
                                        {"reason": str(e)}))
        except (SignatureError, CorruptRunError) as e:
            signature["status"] = "INVALID"
            for p, r in e.problems:
                if (p, r) not in chain:
                    res.findings.append(Finding(f"signature: {p}: {r}", "fail", {"where": p, "reason": r}))
        except Exception as e:  # noqa: BLE001 - e.g. an unreadable key file
            signature["status"] = f"key not usable: {e}"
            res.findings.append(Finding(f"public key not usable: {e}", "fail"))
    elif signed_by is None:
        signature["status"] = "unsigned"
        res.findings.append(Finding(
            "unsigned run: file hashes and the hash chain catch corruption and careless edits, not a deliberate "
            "rewrite (sign runs with --sign-key; docs/security.md)", "info"))
        res.not_checked.append(NotChecked("who wrote the run", "the run is unsigned"))
    else:
        sig_problems = [(p, r) for p, r in manifest_problems if (p, r) not in chain]
        signature["status"] = "INVALID" if sig_problems else "consistent (not checked against a trusted key)"
        for p, r in sig_problems:
            res.findings.append(Finding(f"signature: {p}: {r}", "fail", {"where": p, "reason": r}))
        res.not_checked.append(NotChecked(
            "signature against the operator's trusted key",
            "no public key given (trustfl audit RUN --key PUB); only the signature's consistency was checked"))

    if report is not None:
        if report.untracked:
            res.findings.append(Finding(f"{len(report.untracked)} untracked file(s) not listed in the manifest",
                                        "warn", {"files": list(report.untracked)}))
        if report.incomplete:
            res.findings.append(Finding(f"{len(report.incomplete)} leftover(s) of an interrupted round or write "
                                        "(ignored by readers)", "info", {"files": list(report.incomplete)}))

    # what the run was
    res.checked.append("config, package versions, data fingerprints, torch thread segments recorded")
    extra = manifest.get("extra") or {}
    files = manifest.get("files") or {}
    res.data = {
        "files": {"listed": len(files), "verified": len(report.checked) if report else len(files) - len(file_problems),
                  "problems": [{"file": p, "reason": r} for p, r in file_problems]},
        "hash_chain": "intact" if not chain else f"{len(chain)} break(s)",
        "signature": signature,
        "run": {"format": manifest.get("format"), "created": manifest.get("created"),
                "completed_rounds": manifest.get("completed_rounds"), "d": run.d,
                "engine": extra.get("engine"), "pipeline": extra.get("pipeline"),
                "attackers": extra.get("attackers"), "components": extra.get("components")},
        "config": config_summary(manifest.get("config") or {}),
        "versions": manifest.get("versions") or {},
        "fingerprints": manifest.get("fingerprints") or {},
        "seeds": manifest.get("seeds") or {},
    }
    segments = extra.get("torch_num_threads_segments")
    if segments:
        res.data["torch_thread_segments"] = segments
        if len({s.get("torch_num_threads") for s in segments}) > 1:
            res.findings.append(Finding("torch thread count changed during the run (results may differ in the "
                                        "last bits from a single-setting re-run)", "info", {"segments": segments}))
    else:
        res.not_checked.append(NotChecked("torch thread segments", "not recorded (run not written by Federation)"))
    if not manifest.get("fingerprints"):
        res.not_checked.append(NotChecked("data fingerprints", "none recorded in the manifest"))
    if not manifest.get("versions"):
        res.not_checked.append(NotChecked("package versions", "none recorded in the manifest"))

    fails = [f for f in res.findings if f.severity == "fail"]
    warns = [f for f in res.findings if f.severity == "warn"]
    sig_text = {"unsigned": "unsigned"}.get(signature["status"], f"signature {signature['status']}")
    if fails:
        res.status = "fail"
        from trustfl.audits.report.runner import short_reason

        named = "; ".join(f"{f.details['file']} ({short_reason(f.details['reason'])})" if "file" in f.details
                          else f.title for f in fails[:6]) + (f"; ... {len(fails) - 6} more" if len(fails) > 6 else "")
        res.verdict = f"CORRUPT ({len(fails)} problem(s)): {named}"
    else:
        res.status = "warn" if warns else "pass"
        n = len(report.checked) if report else len(files)
        res.verdict = (f"intact: {n} file(s) verified, hash chain intact, {sig_text}"
                       + (f"; {warns[0].title}" if warns else ""))
    return res
