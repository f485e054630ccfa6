import re

from setuptools import find_packages, setup

# the one version source: supervisor_bluegreen/__init__.py (also `bluegreen --version`)
with open("supervisor_bluegreen/__init__.py", encoding="utf-8") as f:
    VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)

setup(
    name="supervisor-bluegreen",
    version=VERSION,
    description="Zero-downtime blue/green deploys for web apps run under supervisord behind nginx",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    # conf/ (the include, example app configs, programs, hooks, nginx template) ships inside the package as
    # supervisor_bluegreen/examples: one source of truth, printed by `bluegreen example ...`
    packages=[
        *find_packages(include=["supervisor_bluegreen", "supervisor_bluegreen.*"]),
        "supervisor_bluegreen.examples",
    ],
    package_dir={"supervisor_bluegreen.examples": "conf"},
    package_data={
        "supervisor_bluegreen": ["templates/*.j2"],
        "supervisor_bluegreen.examples": ["*.ini", "supervisor/*.conf", "hooks/*", "nginx/*.j2"],
    },
    python_requires=">=3.9",
    install_requires=["supervisor>=4.2", "requests", "jinja2", "psutil", "uv>=0.13"],
    extras_require={"test": ["pytest", "pytest-mock", "pytest-xdist>=3.6", "gunicorn", "django>=4.2,<6", "celery", "PyMySQL", "ruff", "ansible-core>=2.15"]},
    entry_points={"console_scripts": ["bluegreen = supervisor_bluegreen.ctl.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: MIT License",
        "Topic :: System :: Systems Administration",
    ],
)
