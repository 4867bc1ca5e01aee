# Sourced by the install scripts: `venv_install ARGS...` installs into $venv (which the
# caller sets) with uv when the venv has it (`make venv` puts it there), else with pip.
# uv resolves the same versions as pip here (checked on the vLLM set: identical freeze),
# downloads in parallel and installs from its cache in seconds: the first CI run saves
# about a minute and a half on torch alone, a warm one almost all of the install.
venv_install() {
  if [[ -x $venv/bin/uv ]]; then
    "$venv/bin/uv" pip install --quiet --native-tls --python "$venv/bin/python" "$@"
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
