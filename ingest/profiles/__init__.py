"""Register-map profiles (YAML data, not code). A package only so that
``pip install .`` ships the YAML files with ``citylake.ingest``; see
``ingest/modbus/profiles.py`` for how they are found and validated."""
