"""``ppml fl certs|server|client``: wiring for the FL service (ppml.fl.service) and its jobs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np

from ppml.cli._args import integer
from ppml.errors import UsageError

__all__ = ["add_commands"]

JOBS = ("psi", "align", "vfl-lr", "vfl-nn", "fgboost")


def cmd_certs(args: argparse.Namespace) -> int:
    from ppml.fl.service import issue_federation

    issue_federation(Path(args.out), args.party)
    print(f"federation CA and certificates for {', '.join(args.party)} in {args.out} "
          "(ca.key stays with the operator; give each party NAME.pem, NAME.key and ca.pem)")
    return 0


def _write_port(path: Path, port: int) -> None:
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(f"{port}\n")
    os.replace(staging, path)


def cmd_server(args: argparse.Namespace) -> int:
    from ppml.fl.service import Coordinator, CoordinatorAttestation, RoundSpec
    from ppml.tee.keys import tee_session

    session = tee_session()
    if session is None:
        raise UsageError("ppml fl server proves its TEE to every party: run it behind the TEE gate "
                         "(ppml tee run --policy ID … -- ppml fl server …)")
    local_roles: dict[str, Any] = {}
    if args.job == "vfl-lr":
        if not args.leader or not args.member:
            raise UsageError("ppml fl server --job vfl-lr needs --leader (the label party) and every --member")
        from ppml.fl.jobs import arbiter_backend
        from ppml.fl.vfl import arbiter_train

        config = _vfl_lr_config(args)
        backend = arbiter_backend(args.he, key_bits=args.key_bits)
        local_roles[config.arbiter] = lambda channel: arbiter_train(channel, config=config, backend=backend)
    spec = RoundSpec(round_id=args.round_id, job=args.job, parties=tuple(args.party),
                     local_parties=tuple(local_roles), max_message=args.max_message_mb << 20,
                     join_timeout=args.join_timeout, receive_timeout=args.receive_timeout)
    coordinator = Coordinator(spec, attestation=CoordinatorAttestation(session), local_roles=local_roles)
    port = coordinator.start(host=args.host, port=args.port, client_ca_pem=Path(args.ca).read_bytes())
    print(f"FL coordinator for round {args.round_id} ({args.job}) on {args.host}:{port}; parties: "
          f"{', '.join(spec.participants)}", flush=True)
    if args.port_file:
        _write_port(Path(args.port_file), port)
    coordinator.run()
    print(f"round {args.round_id} complete", flush=True)
    return 0


def _connect(args: argparse.Namespace, job: str) -> Any:
    from ppml.fl.service import CoordinatorVerifier, PartyIdentity, connect

    url = args.attestation_url or os.environ.get("PPML_AS_URL")
    ca = args.attestation_ca or os.environ.get("PPML_AS_CA")
    if not url:
        raise UsageError("--attestation-url (or $PPML_AS_URL): the service that attested the coordinator")
    identity = PartyIdentity.from_files(certificate=Path(args.cert), private_key=Path(args.key), ca=Path(args.ca))
    verifier = CoordinatorVerifier.from_service(url, policy_id=args.coordinator_policy, ca=Path(ca) if ca else None)
    return connect(args.coordinator, identity=identity, verifier=verifier, round_id=args.round_id, job=job,
                   max_message=args.max_message_mb << 20, timeout=args.receive_timeout)


def _kms(args: argparse.Namespace) -> Any:
    from ppml.tee.keys import kms_for

    uri = args.kms or os.environ.get("PPML_KMS")
    if not uri:
        raise UsageError("--kms URI (or $PPML_KMS): where this party's keys live")
    return kms_for(uri)


def _write(table: Any, args: argparse.Namespace, kms: Any) -> None:
    from ppml.tabular.tables import write_csv_table

    if not args.output_key:
        raise UsageError("--output-key: the key the result is written under")
    write_csv_table(table, args.output, kms=kms, key_id=args.output_key, overwrite=args.force)


def cmd_client(args: argparse.Namespace) -> int:
    from ppml.fl.jobs import read_party_table, run_alignment, run_psi

    kms = _kms(args)
    table = read_party_table(args.input, kms=kms, id_column=args.id_column)
    if args.job == "psi":
        if not args.peer:
            raise UsageError("ppml fl client psi needs --peer NAME")
        with _connect(args, "psi") as channel:
            count, common = run_psi(channel, table, id_column=args.id_column, peer=args.peer,
                                    cardinality_only=args.cardinality_only, workers=args.workers)
        if common is not None and args.output:
            _write(common, args, kms)
        print(f"intersection: {count}", flush=True)
        return 0
    if args.job == "align":
        if not args.leader or not args.member:
            raise UsageError("ppml fl client align needs --leader NAME and --member NAME for every other party")
        with _connect(args, "align") as channel:
            aligned = run_alignment(channel, table, id_column=args.id_column, leader=args.leader,
                                    members=args.member, workers=args.workers)
        if args.output:
            _write(aligned, args, kms)
        print(f"aligned: {aligned.num_rows}", flush=True)
        return 0
    from ppml.fl.jobs import run_fgboost, run_vfl_lr, run_vfl_nn, vertical_data, write_outcome

    if not args.leader or not args.member:
        raise UsageError(f"ppml fl client {args.job} needs --leader (the label party) and --member for every other")
    if not args.output or not args.output_key:
        raise UsageError(f"ppml fl client {args.job} writes the model share: give --output DIR and --output-key")
    label_column = args.label_column if _party_name(args) == args.leader else None
    with _connect(args, args.job) as channel:
        data = vertical_data(channel, table, id_column=args.id_column, label_column=label_column,
                             leader=args.leader, members=args.member, test_fraction=args.test_fraction,
                             workers=args.workers)
        if args.job == "vfl-lr":
            outcome = run_vfl_lr(channel, data, config=_vfl_lr_config(args), he=args.he)
        elif args.job == "fgboost":
            outcome = run_fgboost(channel, data, config=_fgboost_config(args))
        else:
            outcome = run_vfl_nn(channel, data, config=_split_nn_config(args))
    write_outcome(outcome, args.output, kms=kms, key_id=args.output_key, overwrite=args.force)
    print(f"aligned: {len(data.train_ids) + len(data.test_ids)} rows ({len(data.test_ids)} held out)", flush=True)
    if outcome.predictions is not None:
        from ppml.datagen import ranking_auc

        labels = outcome.predictions.column("label").to_numpy()
        scores = outcome.predictions.column("score").to_numpy()
        print(f"held-out predictions: {outcome.predictions.num_rows} rows, written encrypted to {args.output}",
              flush=True)
        if args.task == "classification":
            print(f"AUC: {ranking_auc(labels, scores):.4f}", flush=True)
        else:
            print(f"RMSE: {float(np.sqrt(np.mean((scores - labels) ** 2))):.4f}", flush=True)
    return 0


def _party_name(args: argparse.Namespace) -> str:
    from ppml.fl.service import PartyIdentity

    return PartyIdentity.from_files(certificate=Path(args.cert), private_key=Path(args.key), ca=Path(args.ca)).name


def _vfl_lr_config(args: argparse.Namespace) -> Any:
    from ppml.fl.vfl import VflConfig

    return VflConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, l2=args.l2,
                     task="linear" if args.task == "regression" else "logistic", seed=args.seed,
                     arbiter=args.arbiter_name, guest=args.leader, hosts=tuple(args.member),
                     mask_scale=2.0 ** 20 if args.he == "paillier" else 2.0 ** 8)


def _fgboost_config(args: argparse.Namespace) -> Any:
    from ppml.fl.fgboost import FgboostConfig

    return FgboostConfig(trees=args.trees, max_depth=args.max_depth, learning_rate=args.learning_rate,
                         n_bins=args.bins, task="regression" if args.task == "regression" else "binary",
                         label_party=args.leader, passive_parties=tuple(args.member), key_bits=args.key_bits,
                         workers=args.workers)


def _split_nn_config(args: argparse.Namespace) -> Any:
    from ppml.fl.splitnn import SplitNNConfig

    return SplitNNConfig(label_party=args.leader, passive_parties=tuple(args.member), epochs=args.epochs,
                         batch_size=args.batch_size, learning_rate=args.learning_rate,
                         task="regression" if args.task == "regression" else "binary", seed=args.seed or 0)


def _vfl_options(p: argparse.ArgumentParser, *, server: bool) -> None:
    group = p.add_argument_group("vertical FL (vfl-lr, vfl-nn, fgboost)",
                                 "every party and the coordinator give the same values")
    if server:
        group.add_argument("--leader", metavar="NAME", help="the label party (guest)")
        group.add_argument("--member", action="append", metavar="NAME", help="every other party (repeat)")
    group.add_argument("--task", choices=["classification", "regression"], default="classification")
    group.add_argument("--epochs", type=integer(1), default=5)
    group.add_argument("--batch-size", type=integer(1), default=64)
    group.add_argument("--learning-rate", type=float, default=0.15)
    group.add_argument("--l2", type=float, default=0.0)
    group.add_argument("--seed", type=int, default=None, help="minibatch order (default: the guest draws one)")
    group.add_argument("--he", choices=["paillier", "ckks"], default="paillier", help="vfl-lr: the HE scheme")
    group.add_argument("--key-bits", type=integer(2048), default=2048, help="vfl-lr, fgboost: Paillier modulus bits")
    group.add_argument("--trees", type=integer(1), default=5, help="fgboost: boosting rounds")
    group.add_argument("--max-depth", type=integer(1), default=3, help="fgboost: tree depth")
    group.add_argument("--bins", type=integer(2), default=16, help="fgboost: quantile bins per feature")


def _service_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--round-id", required=True, metavar="ID", help="the round the coordinator serves")
    p.add_argument("--max-message-mb", type=integer(1), default=64, metavar="MB",
                   help="largest message accepted (default 64 MiB)")
    p.add_argument("--receive-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="a party silent for this long aborts the round (default 300)")


def add_commands(commands: Any) -> None:
    fl = commands.add_parser("fl", help="federated learning: certificates, the attested coordinator, party jobs")
    sub = fl.add_subparsers(dest="fl_command", metavar="COMMAND", required=True)

    p = sub.add_parser("certs", help="make a federation CA and client certificates for the parties")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--party", action="append", required=True, metavar="NAME", help="repeat for every party")
    p.set_defaults(func=cmd_certs)

    p = sub.add_parser("server", help="the coordinator (run behind the TEE gate: ppml tee run … -- ppml fl server)",
                       description="Serve one round over gRPC+TLS: parties authenticate with certificates from "
                       "--ca; every party verifies this process's attestation before sending anything.")
    p.add_argument("--job", choices=JOBS, required=True)
    p.add_argument("--party", action="append", required=True, metavar="NAME",
                   help="a party's certificate common name; repeat for every party")
    p.add_argument("--ca", required=True, metavar="FILE", help="the federation CA (ca.pem) party certificates chain to")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=integer(0), default=0, help="0: any free port (see --port-file)")
    p.add_argument("--port-file", metavar="FILE", help="write the port here once listening")
    p.add_argument("--join-timeout", type=float, default=120.0, metavar="SECONDS")
    p.add_argument("--arbiter-name", default="coordinator", metavar="NAME",
                   help="vfl-lr: the name of the coordinator's own arbiter role (holds the HE key)")
    _service_options(p)
    _vfl_options(p, server=True)
    p.set_defaults(func=cmd_server)

    p = sub.add_parser("client", help="run this party's side of a job against the coordinator",
                       description="Verify the coordinator's attestation, join the round, run the job on this "
                       "party's encrypted table and write the result encrypted once the round has ended cleanly.")
    p.add_argument("job", choices=JOBS)
    p.add_argument("--coordinator", required=True, metavar="HOST:PORT")
    p.add_argument("--coordinator-policy", required=True, metavar="ID",
                   help="the attestation policy the coordinator must have been attested under")
    p.add_argument("--attestation-url", metavar="URL", help="the attestation service (default $PPML_AS_URL)")
    p.add_argument("--attestation-ca", metavar="FILE", help="its CA certificate (default $PPML_AS_CA)")
    p.add_argument("--cert", required=True, metavar="FILE", help="this party's certificate (its name is the CN)")
    p.add_argument("--key", required=True, metavar="FILE", help="this party's private key")
    p.add_argument("--ca", required=True, metavar="FILE", help="the federation CA")
    p.add_argument("--kms", metavar="URI", help="this party's key service (default $PPML_KMS)")
    p.add_argument("--input", required=True, metavar="PATH", help="this party's encrypted CSV table")
    p.add_argument("--id-column", default="id", metavar="NAME")
    p.add_argument("--output", metavar="DIR", help="where the result goes, encrypted")
    p.add_argument("--output-key", metavar="KEY", help="the primary key the result is written under")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("--workers", type=integer(1), default=os.cpu_count() or 1, help="processes hashing ids (PSI)")
    p.add_argument("--peer", metavar="NAME", help="psi: the other party")
    p.add_argument("--cardinality-only", action="store_true", help="psi: learn only the size")
    p.add_argument("--leader", metavar="NAME", help="align / vfl: the label party")
    p.add_argument("--member", action="append", metavar="NAME", help="align / vfl: every other party (repeat)")
    p.add_argument("--label-column", default="label", metavar="NAME", help="vfl: the label party's label column")
    p.add_argument("--test-fraction", type=float, default=0.25, help="vfl: the last share of aligned rows held out")
    p.add_argument("--arbiter-name", default="coordinator", metavar="NAME", help="vfl-lr: the coordinator's role")
    _service_options(p)
    _vfl_options(p, server=False)
    p.set_defaults(func=cmd_client)

    from ppml.cli.fl_flower import add_commands as add_flower_commands

    add_flower_commands(sub)
