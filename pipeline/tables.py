"""After a corpus job: the output's tables describe this run and nothing older (no metadata shard
of an earlier layout, no stale feature table, no feature row outliving its stems)."""
from __future__ import annotations

from stembeam.transforms import features, storage
from stembeam.transforms.write import METADATA_FILE


def drop_stale_metadata(output: str) -> None:
    """metadata/ describes the latest run over the whole manifest. The new table replaces the
    old one when it is written; other files (an earlier layout's shards) are dropped after."""
    written = storage.join(output, "metadata", METADATA_FILE)
    storage.delete([p for p in storage.list_matching(storage.join(output, "metadata"), "tracks*.parquet") if p != written])


def drop_stale_tables(output: str, wanted) -> None:
    """The tables after a corpus run with the feature options ``wanted`` (FeatureOptions)."""
    drop_stale_metadata(output)
    if wanted.features:
        features.drop_stale_feature_tables(output, wanted.feature_frames)
    # Every run, --features or not: no feature row may outlive the stems it describes.
    features.drop_stale_feature_rows(output)
