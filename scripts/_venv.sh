# Sourced by the other scripts: make (once) and activate a virtual environment with the
# project installed in editable mode. Usage: venv_for <dir> <pip requirement args...>
venv_for() {
  local dir=$1; shift
  local python=${PYTHON:-python3}
  if [ ! -x "$dir/bin/python" ]; then
    "$python" -m venv "$dir"
  fi
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
}
