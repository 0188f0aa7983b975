<#
.SYNOPSIS
    Removes the ringmap driver: its Root\RingMap device nodes and its package in the driver store.

.DESCRIPTION
    Run from an elevated PowerShell (Windows PowerShell 5.1 or PowerShell 7):

        .\scripts\uninstall.ps1                      # devices and driver package
        .\scripts\uninstall.ps1 -RemoveCertificate   # also untrust WDRLocalTestCert

    Steps:
      1. Removes every device node whose hardware IDs include Root\RingMap
         (`pnputil /remove-device <instance ID>`, Windows 10 2004 and later). Removing the device
         unloads the driver; consumers holding \\.\RingMap open see their handles fail.
      2. Deletes every ringmap_driver.inf package from the driver store
         (`pnputil /delete-driver oemNN.inf /uninstall /force`). The published oemNN.inf names
         come from Get-WindowsDriver, not from parsing pnputil's localised text.
      3. With -RemoveCertificate, deletes the WDRLocalTestCert certificate from LocalMachine\Root
         and LocalMachine\TrustedPublisher. It is shared by every driver built with wdk-build's
         cargo-make flow on this machine, hence opt-in.
    Test signing is left as it is; `bcdedit /set testsigning off` (elevated) and a restart turn
    it off.

    Not run from this repository's CI: written and reviewed on Linux, where it cannot run.
#>
[CmdletBinding()]
param(
    [switch] $RemoveCertificate
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$HardwareId = 'Root\RingMap'
$InfName = 'ringmap_driver.inf'
$CertSubject = 'CN=WDRLocalTestCert'

function Fail([string] $Message) {
    Write-Host ''
    Write-Host "ringmap uninstall: $Message" -ForegroundColor Red
    exit 1
}

$principal = New-Object Security.Principal.WindowsPrincipal([Security.Principal.WindowsIdentity]::GetCurrent())
if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
    Fail 'removing a kernel driver needs an elevated shell. Open PowerShell with "Run as administrator" and run it again.'
}

$failed = $false

# --- 1. device nodes (present or not) ----------------------------------------------------------
$devices = @(Get-PnpDevice -ErrorAction SilentlyContinue | Where-Object { $_.HardwareID -contains $HardwareId })
if ($devices.Count -eq 0) {
    Write-Host "No device node with hardware ID $HardwareId"
}
foreach ($device in $devices) {
    $output = (& pnputil /remove-device $device.InstanceId 2>&1 | Out-String)
    $exit = $LASTEXITCODE
    Write-Host $output.TrimEnd()
    if ($exit -ne 0 -and $exit -ne 3010) {
        Write-Host "Could not remove $($device.InstanceId) (pnputil exit code $exit)." -ForegroundColor Yellow
        $failed = $true
    } else {
        Write-Host "Removed device node $($device.InstanceId)"
    }
}

# --- 2. driver store ---------------------------------------------------------------------------
$packages = @(Get-WindowsDriver -Online -ErrorAction SilentlyContinue |
    Where-Object { (Split-Path -Leaf $_.OriginalFileName) -eq $InfName })
if ($packages.Count -eq 0) {
    Write-Host "No $InfName package in the driver store"
}
foreach ($package in $packages) {
    $output = (& pnputil /delete-driver $package.Driver /uninstall /force 2>&1 | Out-String)
    $exit = $LASTEXITCODE
    Write-Host $output.TrimEnd()
    if ($exit -ne 0 -and $exit -ne 3010) {
        Write-Host "Could not delete $($package.Driver) (pnputil exit code $exit)." -ForegroundColor Yellow
        $failed = $true
    } else {
        Write-Host "Deleted driver package $($package.Driver) ($InfName, version $($package.Version))"
    }
}

# --- 3. test certificate (opt-in) --------------------------------------------------------------
if ($RemoveCertificate) {
    foreach ($store in @('Root', 'TrustedPublisher')) {
        $certs = @(Get-ChildItem -Path "Cert:\LocalMachine\$store" | Where-Object { $_.Subject -eq $CertSubject })
        foreach ($cert in $certs) {
            Remove-Item -Path "Cert:\LocalMachine\$store\$($cert.Thumbprint)"
            Write-Host "Removed $CertSubject ($($cert.Thumbprint)) from LocalMachine\$store"
        }
    }
}

if ($failed) {
    Fail 'some steps failed (see above). A restart usually releases a device or package that is still in use; then run this script again.'
}
Write-Host ''
Write-Host 'ringmap driver removed.' -ForegroundColor Green
