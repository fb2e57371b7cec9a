"""The model a Beam job runs: found (locally, in the cache, on gs://...), checked, and made
available to the workers: the folder's own ``model.keras``, else an export under
``{output}/_model/``; workers in the launcher's own process get the launcher's model, loaded in
the background while the job starts, through Beam's ``Shared`` handle."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import tempfile
import threading
from typing import Optional

from apache_beam.utils.shared import Shared

from stembeam.transforms import storage
from stembeam.transforms.model_handler import LoadedModel, ModelSource


@dataclasses.dataclass
class PreparedModel:
    """The model of a job: ``source`` (what workers load: its ``config``, ``keras_uri``,
    ``precision``), and a sha256 of its weights (``fingerprint``, part of every stem's resume key).
    For in-process workers it also holds the launcher's LoadedModel while the job runs."""

    source: ModelSource
    fingerprint: str
    loaded: Optional[LoadedModel] = None
    _task: Optional["_Background"] = None

    @property
    def config(self):
        return self.source.config

    @property
    def keras_uri(self) -> str:
        return self.source.keras_uri

    @property
    def precision(self) -> str:
        return self.source.precision

    def failure(self) -> Optional[BaseException]:
        """The background load's error once it failed (None: none, or still loading): a job's
        own failure then only repeats it, wrapped in the runner's traceback."""
        return None if self._task is None or self._task.is_alive() else self._task.error

    def finish(self) -> None:
        """Wait for the background load and re-raise its error; the model is let go (Beam's
        Shared map keeps at most the last one alive)."""
        self.wait()
        if self._task is not None and self._task.error is not None:
            raise self._task.error

    def wait(self) -> None:
        """Wait for the background load and warm-up to end, whatever their outcome (finish()
        re-raises its error)."""
        if self._task is not None:
            self._task.join()

    def release(self) -> None:
        """Let the launcher's model go once the job is over."""
        self.loaded = None


@dataclasses.dataclass(frozen=True)
class ModelRequest:
    """What a job asked for: ``--model`` (name, folder, config JSON, gs:// folder), ``--model_dir``,
    ``--precision``."""

    model: str
    model_dir: Optional[str] = None
    precision: str = "float32"


def prepare_model(request: ModelRequest, output: str, in_process: bool = False, dry_run: bool = False) -> PreparedModel:
    """The model of a job writing to ``output``: see the module docstring. ``in_process``: the
    workers run in this process (the local runner), so no export is written and they share
    the launcher's model; ``dry_run`` writes nothing."""
    from stembeam.model.load import config_for_dir, keras_file_fits, weights_fingerprint

    model, model_dir, remote = _local_folder(request)
    from stembeam.model.resolve import resolve_model_dir

    folder = resolve_model_dir(model, model_dir)
    config = config_for_dir(folder, model)
    if config.n_channels != 2:
        # transforms/write.py opens writers with the model's channel count; mono models give stereo stems.
        raise SystemExit(f"--model {request.model}: a mono model (n_channels 1) is not supported by the Beam jobs yet; use `stembeam separate -p {request.model}`")
    fingerprint = weights_fingerprint(folder)
    export = _Export(output, config, fingerprint)
    # The folder's own model.keras (read where it is, e.g. on gs://), unless it is built for other
    # segments (a 16 kHz name on an 11 kHz export): then the export under _model/ is.
    own_file = keras_file_fits(folder, config)
    keras_uri = _keras_file(remote or folder) if own_file else export.target
    if dry_run or (not in_process and (own_file or export.current())):
        return PreparedModel(ModelSource(keras_uri, config, request.precision), fingerprint)
    if not in_process:
        from stembeam.model.load import load_model

        export.write(load_model(model, model_dir)[1])
        return PreparedModel(ModelSource(keras_uri, config, request.precision), fingerprint)
    return _shared_in_process(ModelSource(keras_uri, config, _runs_as(request.precision)), fingerprint, model, model_dir)


def _local_folder(request: ModelRequest) -> tuple:
    """``(model, model_dir, remote folder or None)``: a gs:// (or other remote) model folder is
    read through Beam FileSystems into a local copy; workers read its model.keras from the
    remote folder itself."""
    model, model_dir = request.model, request.model_dir
    remote = next((uri for uri in (model_dir, model) if uri and not storage.is_local(uri)), None)
    if remote is None:
        return model, model_dir, None
    local, _ = storage.cached_folder(remote)
    return ((model, local) if remote == model_dir else (local, None)) + (remote,)


def _keras_file(folder: str) -> str:
    from stembeam.model.load import KERAS_FILE

    return storage.join(folder, KERAS_FILE)


def _runs_as(precision: str) -> str:
    """The precision in-process workers run: float32 where the CPU has no bfloat16, and what
    ``auto`` chooses on this machine."""
    from stembeam.model.precision import effective_precision

    effective = effective_precision(precision)
    return "float32" if effective == "float32" else effective if precision == "auto" else precision


class _Export:
    """The model exported for worker processes under ``{output}/_model/<name>/``: ``model.keras``
    and ``source.json``, the stamp that vouches for it (reused only for the same weights and the
    same configuration: the export is the weights built for the config's segments, F 1024 bins
    or 1536 for the 16 kHz models)."""

    def __init__(self, output: str, config, fingerprint: str):
        folder = storage.join(output, "_model", config.name.replace(":", "_"))
        self.target, self._source = _keras_file(folder), storage.join(folder, "source.json")
        config_sha256 = hashlib.sha256(config.to_json().encode("utf-8")).hexdigest()
        self._stamp = json.dumps({"weights_sha256": fingerprint, "config_sha256": config_sha256})

    def current(self) -> bool:
        return storage.exists(self.target) and storage.exists(self._source) and storage.read_bytes(self._source).decode("utf-8") == self._stamp

    def write(self, keras_model) -> None:
        from stembeam.model.load import KERAS_FILE

        storage.delete([self._source])  # the stamp vouches for the file: dropped before the file is replaced
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, KERAS_FILE)
            keras_model.save(local)
            if storage.is_local(self.target):
                os.makedirs(os.path.dirname(self.target), exist_ok=True)
            storage.put_file(local, self.target)
        storage.write_bytes_atomic(self._source, self._stamp.encode("utf-8"))


class _Background(threading.Thread):
    """Loads the model into ``pending`` and traces its graphs; ``error``: what it raised."""

    def __init__(self, pending: concurrent.futures.Future, source: ModelSource, model: str, model_dir: Optional[str]):
        super().__init__(daemon=True, name="stembeam-model-load")
        self._pending, self._source, self._model, self._model_dir = pending, source, model, model_dir
        self.error = None

    def run(self) -> None:
        from stembeam.model.load import load_unets
        from stembeam.model.segment_graph import SegmentSeparator

        try:
            _, unets = load_unets(self._model, self._model_dir, self._source.precision)
            separator = SegmentSeparator(unets, self._source.config, self._source.precision)
        except Exception as error:  # noqa: BLE001 - the workers' error (through the future) and finish()'s
            self.error = error
            self._pending.set_exception(error)
            return
        self._pending.set_result(separator)
        try:
            separator.warm_up()  # traced while the first tracks decode; workers may already call it
        except Exception as error:  # noqa: BLE001 - re-raised by finish()
            self.error = error


def _shared_in_process(source: ModelSource, fingerprint: str, model: str, model_dir: Optional[str]) -> PreparedModel:
    """In-process workers get the launcher's model (no export: worker processes need one),
    loaded and traced in the background while Beam starts and decodes the first tracks. It is
    handed to them through a Beam ``Shared`` handle taken now, so that whichever worker asks
    first already finds it (loading or loaded)."""
    pending = concurrent.futures.Future()
    loaded = LoadedModel(pending=pending)
    shared = Shared()
    shared.acquire(lambda: loaded)
    task = _Background(pending, source, model, model_dir)
    task.start()
    return PreparedModel(dataclasses.replace(source, shared=shared), fingerprint, loaded, task)
