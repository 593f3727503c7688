"""``flctl``: operate the federated-learning function from a terminal.

Talks to the deployed (or local) function over HTTP with the operator token.
Settings come from the environment or ``.env``: ``BASE_URL_AWS`` (or, with
``--ow``, ``BASE_URL_OW``) and ``FL_ADMIN_TOKEN``; ``--url`` and ``--token``
override them. Every command takes ``--json`` for scripts.

Exit codes: 0 done; 1 the function refused the request (its message is
printed); 2 wrong usage; 3 the function could not be reached or failed;
4 ``jobs watch`` saw the job stop before it finished its rounds.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import requests

from clients import transfer
from clients.transport import FunctionError
from flcli.evaluate import evaluate_csv
from flcli.operator import Operator
from fllocal import env
from fllocal.tables import DataConfigError

EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_STOPPED = 1, 2, 3, 4
WATCH_PATIENCE_S = 120.0  # how long jobs watch keeps trying a function it cannot reach

EXAMPLES = """examples:
  flctl jobs create --set dataset=mnist --set rounds=5 --name first
  flctl jobs create -f job.yaml --set lr=0.02
  flctl jobs list --state running
  flctl jobs watch job-1a2b3c4d5e6f
  flctl jobs update job-1a2b3c4d5e6f --set lr=0.005
  flctl jobs stop job-1a2b3c4d5e6f --reason "wrong data"
  flctl jobs evaluate job-1a2b3c4d5e6f test.csv --report
  flctl devices list
  flctl devices disable d-1a2b3c4d5e6f
  flctl devices label d-1a2b3c4d5e6f --name "pi in the lab" --label site=lab
  flctl results job-1a2b3c4d5e6f --out results/first
  flctl jobs clone job-1a2b3c4d5e6f --set rounds=20 --name longer
  flctl jobs delete job-1a2b3c4d5e6f --keep-model
  flctl logs job-1a2b3c4d5e6f --follow
  flctl errors job-1a2b3c4d5e6f
  flctl export job-1a2b3c4d5e6f --tensorboard runs --mlflow ./mlruns
  flctl tokens create ana --role operator
  flctl audit --job job-1a2b3c4d5e6f
  flctl --token o-1a2b3c4d5e6f.SECRET whoami
"""


class UsageError(Exception):
    """A command line that cannot be run as written."""


def _common(defaults: bool) -> argparse.ArgumentParser:
    """The options every command takes. Given before the command (``flctl --token T jobs list``) or after
    it, they mean the same: the commands' copies have no defaults, so they never undo the first ones."""
    common = argparse.ArgumentParser(add_help=False)
    keep = {} if defaults else {"default": argparse.SUPPRESS}
    common.add_argument("--json", action="store_true", help="print the function's answer as JSON", **keep)
    common.add_argument(
        "--url", help="the function's base URL (default: BASE_URL_AWS, or BASE_URL_OW with --ow)", **keep
    )
    common.add_argument("--ow", action="store_true", help="use BASE_URL_OW (the OpenWhisk deployment)", **keep)
    common.add_argument("--token", help="operator token (default: FL_ADMIN_TOKEN)", **keep)
    return common


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    common = _common(defaults=False)
    p = argparse.ArgumentParser(
        prog="flctl",
        description="Operate federated-learning jobs and devices.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common(defaults=True)],
    )
    top = p.add_subparsers(
        dest="area", required=True, metavar="{jobs,devices,logs,errors,tokens,audit,whoami,export,results}"
    )

    jobs = top.add_parser("jobs", help="create, list, show, watch, start, stop, update, clone, delete and archive jobs")
    cmd = jobs.add_subparsers(dest="command", required=True)
    create = cmd.add_parser("create", parents=[common], help="create a job from a file and/or --set settings")
    create.add_argument("-f", "--file", help="job definition: JSON, or YAML (.yaml/.yml)")
    create.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help='a job setting; values are read as JSON when they parse (0.01, true, ["a"])',
    )
    create.add_argument("--name")
    create.add_argument("--no-start", action="store_true", help="create it as 'created'; start it with jobs start")
    create.add_argument(
        "--defaults", action="store_true", help="create the default job (MNIST, 20 clients, 10 rounds) as it is"
    )
    lst = cmd.add_parser("list", parents=[common], help="jobs, newest first")
    lst.add_argument("--state", choices=["created", "waiting", "running", "done", "stopped"])
    lst.add_argument("--tag")
    lst.add_argument("--limit", type=int, default=20)
    lst.add_argument("--all", action="store_true", help="every page, not only the first")
    lst.add_argument("--archived", action="store_true", help="only archived jobs (hidden by default)")
    clone = cmd.add_parser("clone", parents=[common], help="a new job from another's settings, with overrides")
    clone.add_argument("job_id")
    clone.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting to override")
    clone.add_argument("--name")
    clone.add_argument("--no-start", action="store_true", help="create it as 'created'")
    delete = cmd.add_parser("delete", parents=[common], help="delete a finished job with its updates and models")
    delete.add_argument("job_id")
    delete.add_argument("--keep-model", action="store_true", help="keep the final model (the job stays, archived)")
    for name, text in (("archive", "hide a finished job from jobs list"), ("unarchive", "list it again")):
        cmd.add_parser(name, parents=[common], help=text).add_argument("job_id")
    for name, text in (
        ("show", "a job and its rounds as a table"),
        ("watch", "follow a job until it ends"),
        ("start", "open a created job to devices"),
    ):
        sub = cmd.add_parser(name, parents=[common], help=text)
        sub.add_argument("job_id")
        if name == "watch":
            sub.add_argument("--interval", type=float, default=2.0, help="seconds between looks")
    stop = cmd.add_parser("stop", parents=[common], help="stop a job now")
    stop.add_argument("job_id")
    stop.add_argument("--reason", default="stopped with flctl")
    evaluate = cmd.add_parser(
        "evaluate", parents=[common], help="score a tabular job's global model on a CSV file of your own"
    )
    evaluate.add_argument("job_id")
    evaluate.add_argument("file", help="CSV with the job's features and its target")
    evaluate.add_argument("--round", type=int, help="the model of this round (default: the latest)")
    evaluate.add_argument("--report", action="store_true", help="record the figures with the job (report)")
    update = cmd.add_parser("update", parents=[common], help="change settings from the next round on")
    update.add_argument("job_id")
    update.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", required=True)

    devices = top.add_parser("devices", help="the registered devices")
    dcmd = devices.add_subparsers(dest="command", required=True)
    dlist = dcmd.add_parser("list", parents=[common], help="devices with their info and statistics")
    dlist.add_argument("--job", help="only the devices that joined this job")
    for name, text in (
        ("disable", "stop offering jobs to a device and picking it"),
        ("enable", "offer jobs to a disabled device again"),
        ("revoke", "make a device's tokens stop working at once (it leaves its jobs)"),
    ):
        dcmd.add_parser(name, parents=[common], help=text).add_argument("device_id")
    label = dcmd.add_parser("label", parents=[common], help="name a device and set the operator's labels on it")
    label.add_argument("device_id")
    label.add_argument("--name", help="a name people know it by ('' clears it)")
    label.add_argument("--label", action="append", default=None, metavar="KEY=VALUE",
                       help="an operator label (criteria: labels.KEY); these replace the last ones")  # fmt: skip

    tokens = top.add_parser("tokens", help="named operator tokens with a role (admin only)")
    tcmd = tokens.add_subparsers(dest="command", required=True)
    tcreate = tcmd.add_parser("create", parents=[common], help="a new token: shown once, stored only as a hash")
    tcreate.add_argument("name")
    tcreate.add_argument("--role", choices=["viewer", "operator", "admin"], default="viewer",
                         help="viewer: read only; operator: jobs and devices; admin: tokens too")  # fmt: skip
    tcmd.add_parser("list", parents=[common], help="the operator accounts (never their tokens)")
    tcmd.add_parser("revoke", parents=[common], help="a token stops working at once").add_argument("name")

    audit = top.add_parser("audit", parents=[common], help="who did what, when, to which job or device")
    audit.add_argument("--job", help="only what was done to this job")
    audit.add_argument("--device", help="only what was done to this device")
    audit.add_argument("--who", help="only what this operator did")
    audit.add_argument("--limit", type=int, default=50)
    top.add_parser("whoami", parents=[common], help="the operator this token belongs to, and its role")
    for name, text in (("logs", "what a job's devices said: warnings, errors, a line a round"),
                       ("errors", "a job's devices' warnings and errors")):  # fmt: skip
        said = top.add_parser(name, parents=[common], help=text)
        said.add_argument("job_id")
        said.add_argument("--device", help="only this device's lines")
        said.add_argument("--limit", type=int, default=100, help="the last this many lines")
        said.add_argument("--follow", action="store_true", help="keep printing new lines until the job ends")

    export = top.add_parser("export", parents=[common], help="a job's rounds to TensorBoard and/or MLflow")
    export.add_argument("job_id")
    export.add_argument("--tensorboard", metavar="DIR", help="write TensorBoard event files under DIR/<job id>")
    export.add_argument("--mlflow", metavar="URI", help="log an MLflow run there (a folder: a local file store)")
    export.add_argument("--experiment", default="serverless-fl", help="the MLflow experiment (default: %(default)s)")

    results = top.add_parser(
        "results", parents=[common], help="download a job's final model, summary.json and accuracy plot"
    )
    results.add_argument("job_id")
    results.add_argument("--out", required=True, help="folder to write into")
    return p.parse_args(argv)


class DuplicateKey(ValueError):
    """A key given twice in one object of a job definition."""


def _unique(pairs: list[tuple]) -> dict:
    """A JSON (or YAML) object, refusing a key given twice."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(f"the key {key!r} is given twice")
        out[key] = value
    return out


# a YAML 1.2 float as people write it (1e-2, 1.5E3, .5): YAML 1.1's resolver wants a dot and a signed exponent
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$")


def _yaml(text: str) -> object:
    """YAML read with safe constructors only, numbers as YAML 1.2 reads them, duplicate keys refused."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
        loader.flatten_mapping(node)
        return _unique([(loader.construct_object(k, deep=True), loader.construct_object(v, deep=True))
                        for k, v in node.value])  # fmt: skip

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506  (a SafeLoader subclass: no object construction)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None


def settings_from(text: list[str]) -> dict:
    """``KEY=VALUE`` pairs as a dict; values are JSON where they parse, text otherwise."""
    out = {}
    for pair in text:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"--set takes KEY=VALUE, not {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def read_definition(path: str) -> dict:
    """A job definition file: YAML by extension, JSON otherwise (never code: safe loaders only).

    Numbers load as numbers as people write them (YAML 1.1 reads ``1e-2`` as text; YAML 1.2 and JSON
    do not), and a key given twice is refused, not silently merged."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    try:
        doc = _yaml(text) if path.endswith((".yaml", ".yml")) else json.loads(text, object_pairs_hook=_unique)
    except DuplicateKey as exc:
        raise UsageError(f"{path}: {exc}") from None
    except ValueError as exc:
        raise UsageError(
            f"{path} is not valid {'YAML' if path.endswith(('.yaml', '.yml')) else 'JSON'}: {exc}"
        ) from None
    if not isinstance(doc, dict):
        raise UsageError(f"{path} must hold one object of job settings")
    return doc


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """Rows as aligned text columns: (key, heading) pairs."""
    cells = [[heading for _, heading in columns]] + [[_cell(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def _in_job(figures: dict | None) -> dict:
    """A device's figures in the job ``devices list --job`` names, as table cells."""
    if not figures:
        return {}
    return {
        "client_id": figures["client_id"],
        "rounds_counted": figures["rounds_counted"],
        "left": figures["left"],
        "job_seen": _ago(figures["last_seen"]),
    }


def percent(fraction: float | None) -> str | None:
    """A fraction as people read accuracies, as the dashboard shows them: 98.60 %."""
    return None if fraction is None else f"{100 * fraction:.2f} %"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    return str(value)


def _rate(entry: dict) -> float | None:
    """Updates folded per second over a round or version."""
    return round(entry["clients"] / entry["seconds"], 3) if entry.get("seconds") else None


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    s = max(0, int(time.time() - ts))
    return f"{s}s ago" if s < 120 else f"{s // 60}m ago" if s < 7200 else f"{s // 3600}h ago"


class Commands:
    """One method per command; each returns what --json prints and prints the readable form otherwise."""

    def __init__(self, op: Operator, as_json: bool):
        self.op = op
        self.as_json = as_json

    def out(self, payload: object, text: str) -> None:
        print(json.dumps(payload, indent=2) if self.as_json else text)

    def jobs_create(self, a: argparse.Namespace) -> int:
        if not (a.file or a.set or a.defaults):
            raise UsageError(
                "say what to create: -f job.yaml and/or --set KEY=VALUE, or --defaults for the default job "
                "(MNIST, 20 clients, 10 rounds)"
            )
        body = read_definition(a.file) if a.file else {}
        body.update(settings_from(a.set))
        if a.name:
            body["name"] = a.name
        if a.no_start:
            body["start"] = False
        made = self.op.call("create_job", body)
        self.out(made, f"{made['job_id']} {made['state']}")
        return 0

    def jobs_list(self, a: argparse.Namespace) -> int:
        body = {k: v for k, v in (("state", a.state), ("tag", a.tag), ("limit", a.limit)) if v is not None}
        body["archived"] = a.archived
        jobs, page = [], self.op.call("list_jobs", body)
        jobs += page["jobs"]
        while a.all and page["next"]:
            page = self.op.call("list_jobs", {**body, "after": page["next"]})
            jobs += page["jobs"]
        rows = [
            {
                **j,
                "progress": f"{j['round']}/{j['rounds']}",
                "clients": f"{j['clients']}/{j['num_clients']}",
                "age": _ago(j["created_at"]),
            }
            for j in jobs
        ]
        self.out(
            {"jobs": jobs, "next": page["next"]},
            table(
                rows,
                [
                    ("job_id", "JOB"),
                    ("name", "NAME"),
                    ("state", "STATE"),
                    ("progress", "ROUND"),
                    ("clients", "CLIENTS"),
                    ("eval_accuracy", "FED. ACC"),
                    ("dataset", "DATA"),
                    ("tags", "TAGS"),
                    ("age", "CREATED"),
                ],
            ),
        )
        return 0

    def jobs_show(self, a: argparse.Namespace) -> int:
        st = self.op.status(a.job_id)
        cfg, asynchronous = st["config"], st.get("mode") == "async"
        rows = [
            {
                "round": h["round"],
                "clients": f"{h['clients']}/{h['picked']}",
                "seconds": h["seconds"],
                "rate": _rate(h),
                "staleness": f"{h['staleness_mean']:.1f}/{h['staleness_max']}" if "staleness_mean" in h else None,
                "acc": percent(h["metrics"].get("eval_accuracy")),
                "loss": h["metrics"].get("train_loss"),
                "closed": h["closed"],
                "rules": [r["rule"] for r in h.get("rules", [])],
            }
            for h in st["history"]
        ]
        unit = "version" if asynchronous else "round"
        head = [
            f"{st['job_id']}  {st.get('name') or ''}  {st['state']}  {unit} {st['round']}/{st['rounds']}  "
            f"clients {st['subscribed']}/{cfg['num_clients']}",
            f"{cfg['dataset']}, model {st['model']['name']} ({st['model']['parameters']:,} parameters), "
            f"{cfg['strategy']}, lr {cfg['lr']}, {plural(cfg['local_epochs'], 'local epoch')}",
        ]
        if asynchronous:
            buf = st["buffer"]
            head.append(
                f"async: {buf['size']} updates per version, {buf['training']} training now (at most "
                f"{buf['max_concurrency']}), {st['submitted']} in the buffer, "
                f"max staleness {cfg['max_staleness']}"
            )
        if st.get("stopped_because"):
            head.append(f"ended: {st['stopped_because']}")
        head += privacy_lines(st)
        if st.get("criteria"):
            head.append(f"criteria: {json.dumps(st['criteria'])}")
        for i, rule in enumerate(st.get("rules") or []):
            head.append(f"rule {i}: when {json.dumps(rule.get('when'))} then {json.dumps(rule.get('then'))}")
        if "waiting_for" in st:
            head.append(waiting_text(st["waiting_for"]))
        for change in st.get("changes", []):
            head.append(f"from round {change['round']} ({change['by']}): {json.dumps(change['set'])}")
        columns = [("round", unit.upper()), ("clients", "UPDATES"), ("seconds", "SECONDS"), ("rate", "UPDATES/S")]
        columns += [("staleness", "STALENESS MEAN/MAX")] if asynchronous else []
        self.out(
            st,
            "\n".join(head)
            + "\n\n"
            + table(
                rows,
                columns
                + [
                    ("acc", "FED. ACC OF MODEL RECEIVED"),
                    ("loss", "TRAIN LOSS"),
                    ("closed", "CLOSED"),
                    ("rules", "RULES FIRED"),
                ],
            ),
        )
        return 0

    def _status_retrying(self, job_id: str, patience_s: float = WATCH_PATIENCE_S) -> dict:
        """The job's status; a connection that fails is tried again with backoff (a function restarting,
        a network blip) for up to ``patience_s``, saying so, before giving up."""
        delay, waited = 1.0, 0.0
        while True:
            try:
                return self.op.status(job_id)
            except requests.RequestException as exc:
                if waited >= patience_s:
                    raise
                print(f"flctl: cannot reach the function ({type(exc).__name__}); trying again in {delay:.0f}s",
                      file=sys.stderr)  # fmt: skip
                time.sleep(delay)
                waited += delay
                delay = min(delay * 2, 30.0)

    def jobs_watch(self, a: argparse.Namespace) -> int:
        shown = 0
        while True:
            st = self._status_retrying(a.job_id)
            for h in st["history"][shown:]:
                line = {
                    "job_id": st["job_id"],
                    "round": h["round"],
                    "rounds": st["rounds"],
                    **h["metrics"],
                    "seconds": h["seconds"],
                    "rules": h.get("rules", []),
                }
                acc = h["metrics"].get("eval_accuracy")
                unit = "version" if st.get("mode") == "async" else "round"
                print(
                    json.dumps(line)
                    if self.as_json
                    else f"{unit} {h['round']}/{st['rounds']}: {h['clients']} updates in {h['seconds']:.1f}s"
                    + (
                        f", staleness mean {h['staleness_mean']:.1f} max {h['staleness_max']}"
                        if "staleness_mean" in h
                        else ""
                    )
                    + (f", federated accuracy of the model received {percent(acc)}" if acc is not None else "")
                    + (f", rules fired {[r['rule'] for r in h['rules']]}" if h.get("rules") else ""),
                    flush=True,
                )
            shown = len(st["history"])
            if st["state"] in ("done", "stopped"):
                end = {"job_id": st["job_id"], "state": st["state"], "stopped_because": st.get("stopped_because")}
                print(json.dumps(end) if self.as_json else f"{st['state']}: {st.get('stopped_because')}")
                return 0 if st["state"] == "done" else EXIT_STOPPED
            time.sleep(a.interval)

    def jobs_start(self, a: argparse.Namespace) -> int:
        reply = self.op.call("start_job", {"job_id": a.job_id})
        self.out(reply, f"{reply['job_id']} {reply['state']}")
        return 0

    def jobs_stop(self, a: argparse.Namespace) -> int:
        reply = self.op.call("stop_job", {"job_id": a.job_id, "reason": a.reason})
        self.out(reply, f"{reply['job_id']} stopped in round {reply['round']}: {reply['stopped_because']}")
        return 0

    def jobs_evaluate(self, a: argparse.Namespace) -> int:
        try:
            got = evaluate_csv(self.op, a.job_id, a.file, a.round)
        except (ValueError, DataConfigError) as exc:
            raise UsageError(str(exc)) from None
        if a.report:
            figures = {k: v for k, v in got.items() if k.startswith("test_")}
            self.op.call("report", {"job_id": a.job_id, "round": got["model_round"], "metrics": figures})
        text = ", ".join(f"{k[5:]} {_cell(v)}" for k, v in got.items() if k.startswith("test_"))
        self.out(got, f"{a.job_id} round {got['model_round']} on {got['rows']} rows of {a.file}: {text}")
        return 0

    def jobs_clone(self, a: argparse.Namespace) -> int:
        body = {"job_id": a.job_id, "set": settings_from(a.set), "start": not a.no_start}
        if a.name:
            body["name"] = a.name
        made = self.op.call("clone_job", body)
        self.out(made, f"{made['job_id']} {made['state']} (a clone of {made['cloned_from']})")
        return 0

    def jobs_delete(self, a: argparse.Namespace) -> int:
        gone = self.op.call("delete_job", {"job_id": a.job_id, "keep_model": a.keep_model})
        counts = ", ".join(f"{n} {k}" for k, n in gone["deleted"].items())
        kept = (
            f"; kept the model of round {gone['kept_model_round']} (the job stays, archived)"
            if gone["kept_model_round"] is not None
            else ""
        )
        self.out(gone, f"{a.job_id} deleted: {counts}{kept}")
        return 0

    def jobs_archive(self, a: argparse.Namespace) -> int:
        self.out(self.op.call("archive_job", {"job_id": a.job_id}), f"{a.job_id} archived (jobs list --archived)")
        return 0

    def jobs_unarchive(self, a: argparse.Namespace) -> int:
        self.out(self.op.call("archive_job", {"job_id": a.job_id, "archived": False}), f"{a.job_id} listed again")
        return 0

    def jobs_update(self, a: argparse.Namespace) -> int:
        reply = self.op.call("update_job", {"job_id": a.job_id, "set": settings_from(a.set)})
        self.out(reply, f"{reply['job_id']}: from round {reply['from_round']}: {json.dumps(reply['set'])}")
        return 0

    def _on_device(self, action: str, device_id: str, said: str) -> int:
        """One operator action on a device; ``said`` is the line printed, formatted with the reply."""
        reply = self.op.call(action, {"device_id": device_id})
        self.out(reply, said.format(**reply))
        return 0

    def devices_disable(self, a: argparse.Namespace) -> int:
        return self._on_device("disable_device", a.device_id, "{device_id} disabled: not offered jobs, not picked")

    def devices_enable(self, a: argparse.Namespace) -> int:
        return self._on_device("enable_device", a.device_id, "{device_id} enabled")

    def devices_revoke(self, a: argparse.Namespace) -> int:
        said = "{device_id} revoked: its tokens no longer work; left {clients_left} job(s)"
        return self._on_device("revoke_device", a.device_id, said)

    def tokens_create(self, a: argparse.Namespace) -> int:
        made = self.op.call("create_operator_token", {"name": a.name, "role": a.role})
        self.out(made, f"operator {made['name']} ({made['role']}); its token, shown only now:\n{made['token']}")
        return 0

    def tokens_list(self, a: argparse.Namespace) -> int:
        ops = self.op.call("list_operator_tokens")["operators"]
        rows = [
            {"name": o["name"], "role": o["role"], "by": o["created_by"], "created": _ago(o["created_at"]),
             "revoked": _ago(o["revoked_at"]) if o.get("revoked_at") else ""}
            for o in ops
        ]  # fmt: skip
        cols = [
            ("name", "NAME"),
            ("role", "ROLE"),
            ("by", "CREATED BY"),
            ("created", "CREATED"),
            ("revoked", "REVOKED"),
        ]
        self.out(ops, table(rows, cols) if rows else "no operator tokens yet (the root token is FL_ADMIN_TOKEN)")
        return 0

    def tokens_revoke(self, a: argparse.Namespace) -> int:
        self.out(self.op.call("revoke_operator_token", {"name": a.name}), f"{a.name}'s token is revoked")
        return 0

    def audit(self, a: argparse.Namespace) -> int:
        body = {"limit": a.limit, "job_id": a.job, "device_id": a.device, "who": a.who}
        entries = self.op.call("audit", {k: v for k, v in body.items() if v is not None})["entries"]
        cols = [("at", "WHEN"), ("who", "WHO"), ("action", "ACTION"), ("on", "ON"), ("detail", "DETAIL")]
        self.out(entries, table(audit_rows(entries), cols) if entries else "nothing recorded yet")
        return 0

    def logs(self, a: argparse.Namespace, levels: list[str] | None = None) -> int:
        body: dict = {"job_id": a.job_id, "limit": a.limit}
        if a.device:
            body["device_id"] = a.device
        if levels:
            body["levels"] = levels
        lines = self.op.call("logs", body)["lines"]
        self.out(lines, "\n".join(log_line(x) for x in lines) if lines else "no lines yet")
        last = lines[-1]["at"] if lines else 0.0
        while a.follow:  # until the job has ended and said nothing more
            time.sleep(FOLLOW_S)
            fresh = self.op.call("logs", {**body, "since": last})["lines"]
            for x in fresh:
                print(json.dumps(x) if self.as_json else log_line(x), flush=True)
            if fresh:
                last = fresh[-1]["at"]
            elif self.op.status(a.job_id)["state"] in ("done", "stopped"):
                break
        return 0

    def errors(self, a: argparse.Namespace) -> int:
        return self.logs(a, ["warning", "error"])

    def export(self, a: argparse.Namespace) -> int:
        from flcli import export

        if not a.tensorboard and not a.mlflow:
            raise UsageError("export needs --tensorboard DIR and/or --mlflow URI")
        st = self.op.status(a.job_id)
        done = {"job_id": a.job_id, "rounds": len(st["history"])}
        if a.tensorboard:
            done["tensorboard"] = str(Path(a.tensorboard) / a.job_id)
            done["scalars"] = export.to_tensorboard(st, Path(a.tensorboard))
        if a.mlflow:
            try:
                done["mlflow_run_id"] = export.to_mlflow(st, a.mlflow, a.experiment)
            except RuntimeError as exc:
                raise UsageError(str(exc)) from None
        said = [f"{a.job_id}: {done['rounds']} rounds"]
        if a.tensorboard:
            said.append(f"{done['scalars']} scalars in {done['tensorboard']} (tensorboard --logdir {a.tensorboard})")
        if a.mlflow:
            said.append(f"MLflow run {done['mlflow_run_id']} at {a.mlflow}")
        self.out(done, "; ".join(said))
        return 0

    def whoami(self, a: argparse.Namespace) -> int:
        me = self.op.call("whoami")
        self.out(me, f"{me['name']} ({me['role']})")
        return 0

    def devices_label(self, a: argparse.Namespace) -> int:
        body: dict = {"device_id": a.device_id}
        if a.name is not None:
            body["name"] = a.name or None
        if a.label is not None:
            pairs = [item.partition("=") for item in a.label]
            if any(not sep or not key for key, sep, _ in pairs):
                raise UsageError("--label takes KEY=VALUE")
            body["labels"] = {key: value for key, _, value in pairs}
        if len(body) == 1:
            raise UsageError("devices label needs --name and/or --label")
        d = self.op.call("label_device", body)
        labels = ", ".join(f"{k}={v}" for k, v in d["labels"].items()) or "none"
        self.out(d, f"{d['device_id']}: name {d['name'] or '(none)'}; operator labels {labels}")
        return 0

    def devices_list(self, a: argparse.Namespace) -> int:
        reply = self.op.call("devices", {"job_id": a.job} if a.job else {})
        rows = [
            {
                "device_id": d["device_id"],
                "name": d.get("name"),
                "platform": d["info"].get("platform"),
                "cpus": d["info"].get("cpus"),
                "memory": d["info"].get("memory_mb"),
                "datasets": sorted(d["info"].get("datasets", {})),
                # the operator's labels, then the device's own (info.labels)
                "labels": [f"{k}={v}" for k, v in {**d["info"].get("labels", {}), **d.get("labels", {})}.items()],
                **d["stats"],
                "seen": _ago(d["stats"].get("last_seen")),
                **_in_job(d.get("in_job")),
            }
            for d in reply["devices"]
        ]
        # with --job, the device's figures in that job, not its totals over all jobs
        figures = (
            [("client_id", "CLIENT"), ("rounds_counted", "ROUNDS COUNTED"), ("left", "LEFT"), ("job_seen", "SEEN")]
            if a.job
            else [
                ("jobs_joined", "JOBS"),
                ("rounds_trained", "ROUNDS"),
                ("deadlines_missed", "MISSED"),
                ("failures_reported", "FAILED"),
                ("mean_train_seconds", "TRAIN S"),
                ("contribution", "CONTRIB."),
                ("seen", "SEEN"),
            ]
        )
        self.out(
            reply,
            table(
                rows,
                [
                    ("device_id", "DEVICE"),
                    ("name", "NAME"),
                    ("platform", "PLATFORM"),
                    ("cpus", "CPUS"),
                    ("memory", "MEMORY MB"),
                    ("datasets", "DATA"),
                    ("labels", "LABELS"),
                    *figures,
                ],
            ),
        )
        return 0

    def results(self, a: argparse.Namespace) -> int:
        from flcli.plots import plot_history

        st = self.op.status(a.job_id)
        model = self.op.call("get_model", {"job_id": a.job_id})
        if not st["history"] and model["model_round"] is None:
            raise UsageError(
                f"job {a.job_id} has no model and no closed round yet ({st['state']}, round {st['round']}): "
                f"nothing to write; try again once a round has closed (flctl jobs watch {a.job_id})"
            )
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        files = {"summary": out / "summary.json"}
        (out / "summary.json").write_text(json.dumps(st, indent=2) + "\n")
        if st["history"]:
            files["plot"] = out / "accuracy.png"
            plot_history(st, files["plot"])
        else:  # an empty plot would only confuse: say why there is none
            print(f"flctl: no round of {a.job_id} has closed yet: no plot written", file=sys.stderr)
        blob = transfer.model_part(self.op.call, model)  # in chunks when it is large
        if blob is not None:
            files["model"] = out / "model.safetensors"
            files["model"].write_bytes(blob)
        reply = {"job_id": a.job_id, "model_round": model["model_round"], **{k: str(v) for k, v in files.items()}}
        self.out(reply, "\n".join(f"wrote {p}" for p in files.values()))
        return 0


def privacy_lines(st: dict) -> list[str]:
    """What a job's privacy settings give: epsilon spent so far, the noise and clipping, the secure stage."""
    lines = []
    dp, spent = st["config"].get("dp"), st.get("privacy")
    if dp and spent is not None:
        eps = (
            "not yet (no round closed)"
            if not spent.get("rounds")
            else (f"{spent['epsilon']:.3g}" if spent.get("epsilon") is not None else "unbounded (no noise)")
        )
        budget = f" of {spent['target_epsilon']:g}" if spent.get("target_epsilon") else ""
        lines.append(
            f"differential privacy: epsilon {eps}{budget} at delta {spent['delta']:.3g} after "
            f"{plural(spent.get('rounds', 0), 'round')}; noise {dp['noise_multiplier']:g} x clip norm "
            f"{spent.get('clip_norm', dp['clip_norm']):.4g}{' (adaptive)' if dp.get('target_quantile') else ''}"
        )
    sa = st["config"].get("secure_aggregation")
    if sa:
        now = st.get("secure") or {}
        lines.append(
            f"secure aggregation: {sa['degree']} neighbours, threshold {sa['threshold']}, "
            f"{sa['bits']}-bit values in [-{sa['clip_range']:g}, {sa['clip_range']:g}]"
            + (f"; round {st['round']} attempt {now['attempt']} at stage {now['stage']}" if now else "")
        )
    return lines  # fmt: skip


FOLLOW_S = 2.0


def log_line(x: dict) -> str:
    """One device log line as flctl prints it."""
    when = time.strftime("%H:%M:%S", time.localtime(x["at"]))
    who = x.get("device_id") or x["client_id"]
    rnd = f" round {x['round']}" if "round" in x else ""
    return f"{when} {x['level'].upper():7} {who}{rnd}: {x['text']}"


def audit_rows(entries: list[dict]) -> list[dict]:
    """Audit entries as table rows: when, who (role), what, on what, how it ended."""
    return [
        {
            "at": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"])),
            "who": f"{e['who']} ({e['role']})",
            "action": e["action"],
            "on": e.get("job_id") or e.get("device_id") or "",
            "detail": json.dumps(e["detail"]) if e.get("detail") else "",
        }
        for e in entries
    ]


def waiting_text(wait: dict) -> str:
    """Why a job waits, in a line: the clients it still needs, and which criterion keeps devices out."""
    text = f"waiting: {wait['joined']} of the {wait['clients']} clients it starts with have joined"
    if "clauses" in wait:
        parts = [f"{json.dumps(c['clause'])} {c['meet']}" for c in wait["clauses"]]
        text += (
            f"; of {wait['devices']} registered devices {wait['meet_all']} meet all its criteria "
            f"(each clause: {', '.join(parts)})"
        )
    return text


def unreachable_hint(url: str) -> str:
    """What to try when the function does not answer: start a local one, or add the stage to the URL."""
    local = any(host in url for host in ("127.0.0.1", "localhost"))
    hint = "Start a local function with `make serve` (it prints its URL). " if local else ""
    path = url.split("://", 1)[-1].partition("/")[2].strip("/")
    if not path:
        hint += "The URL names no stage: the function's URL ends with it, e.g. .../dev."
    return hint.strip() or "Check the URL (BASE_URL_AWS, --url) and that the function is deployed."


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    env.load()
    url = a.url or env.get("BASE_URL_OW" if a.ow else "BASE_URL_AWS")
    if not url:
        print(
            f"flctl: no function URL: set {'BASE_URL_OW' if a.ow else 'BASE_URL_AWS'} (or .env), or pass --url",
            file=sys.stderr,
        )
        return EXIT_USAGE
    commands = Commands(Operator(url, a.token or env.get("FL_ADMIN_TOKEN")), a.json)
    alone = ("results", "audit", "whoami", "logs", "errors", "export")  # commands without a subcommand
    name = a.area if a.area in alone else f"{a.area}_{a.command}"
    try:
        return getattr(commands, name)(a)
    except UsageError as exc:
        print(f"flctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FunctionError as exc:
        stageless = exc.status == 404 and not url.split("://", 1)[-1].partition("/")[2].strip("/")
        hint = f" {unreachable_hint(url)}" if stageless else ""
        said = f": {exc.message.rstrip('.')}" if exc.message.strip() else " with no message"
        print(f"flctl: the function answered {exc.status}{said}.{hint}", file=sys.stderr)
        return EXIT_UNREACHABLE if exc.status >= 500 else EXIT_REFUSED
    except requests.RequestException as exc:
        print(f"flctl: cannot reach the function at {url}: {type(exc).__name__}. {unreachable_hint(url)}",
              file=sys.stderr)  # fmt: skip
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
