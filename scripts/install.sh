#!/usr/bin/env bash
# Install what the project and its local stack need: the Debian packages of the stack
# (Docker engine, registry, debootstrap, htpasswd, Chromium for the UI test) and the Python
# venv in .venv/.
# Safe to run again: it installs only what is missing, and skips pip while the requirement
# files are unchanged since the last successful install.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"
# chromium: the end-to-end test of the Prefect UI drives it headless.
packages=(docker.io docker-registry debootstrap apache2-utils chromium)
# PostgreSQL only for a stack whose Prefect server runs on it (DEVSTACK_PREFECT_DB=postgres).
if [[ "${DEVSTACK_PREFECT_DB:-sqlite}" == "postgres" ]]; then
    packages+=(postgresql)
fi

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    else
        sudo "$@"
    fi
}

install_packages() {
    local missing=() package
    for package in "${packages[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$package")
        fi
    done
    if ((${#missing[@]} == 0)); then
        echo "debian packages: already installed (${packages[*]})"
        return
    fi
    echo "debian packages: installing ${missing[*]}"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
}

requirement_files() {
    local name
    for name in requirements.txt requirements-dev.txt; do
        if [[ -f "$repo_root/$name" ]]; then
            echo "$name"
        fi
    done
}

install_venv() {
    if [[ ! -x "$venv/bin/python" ]]; then
        echo "venv: creating $venv"
        "$python" -m venv "$venv"
    fi

    local files
    mapfile -t files < <(requirement_files)
    if ((${#files[@]} == 0)); then
        echo "venv: no requirement files yet, nothing to install"
        return
    fi

    # The stamp covers the file names, their content and the venv's Python version.
    local wanted
    wanted="$(
        cd "$repo_root"
        {
            sha256sum "${files[@]}"
            "$venv/bin/python" --version
        } | sha256sum | cut -d' ' -f1
    )"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
        echo "venv: requirements unchanged since the last install (${files[*]})"
        return
    fi

    local arguments=() name
    for name in "${files[@]}"; do
        arguments+=(-r "$repo_root/$name")
    done
    echo "venv: pip install ${arguments[*]}"
    "$venv/bin/python" -m pip install "${arguments[@]}"
    echo "$wanted" >"$stamp"
}

install_packages
install_venv
