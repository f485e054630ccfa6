from setuptools import find_packages, setup

setup(
    name="supervisor-bluegreen",
    version="0.1.0",
    description="Zero-downtime blue/green deploys for web apps run under supervisord behind nginx",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["supervisor_bluegreen", "supervisor_bluegreen.*"]),
    package_data={"supervisor_bluegreen": ["templates/*.j2"]},
    python_requires=">=3.9",
    install_requires=["supervisor>=4.2", "requests", "jinja2", "psutil"],
    extras_require={"test": ["pytest", "pytest-mock", "gunicorn", "django>=4.2,<6", "celery", "PyMySQL", "ruff"]},
    entry_points={"console_scripts": ["bluegreen = supervisor_bluegreen.cli:main"]},
    classifiers=["Programming Language :: Python :: 3", "Topic :: System :: Systems Administration"],
)
