# Sourced by the install scripts: `venv_install ARGS...` installs into $venv (which the
# caller sets) with uv when the venv has it (`make venv` puts it there), else with pip.
# uv resolves the same versions as pip here (checked on the vLLM set: identical freeze),
# downloads in parallel and installs from its cache in seconds: the first CI run saves
# about a minute and a half on torch alone, a warm one almost all of the install.
# --compile-bytecode, as pip does: with PYTHONDONTWRITEBYTECODE set (this machine sets it)
# nothing else writes .pyc files, and every vLLM process would compile its imports again
# (26 s instead of 10 s to import vLLM's API server; engines served ~40 s later).
venv_install() {
  if [[ -x $venv/bin/uv ]]; then
    "$venv/bin/uv" pip install --quiet --native-tls --compile-bytecode --python "$venv/bin/python" "$@"
  else
    "$venv/bin/python" -m pip install --quiet "$@"
  fi
}

venv_uninstall() {
  if [[ -x $venv/bin/uv ]]; then
    "$venv/bin/uv" pip uninstall --quiet --python "$venv/bin/python" "$@"
  else
    "$venv/bin/python" -m pip uninstall --quiet --yes "$@"
  fi
}
