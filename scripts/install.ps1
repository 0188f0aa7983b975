<#
.SYNOPSIS
    Installs the test-signed ringmap driver package and creates its root device (Root\RingMap).

.DESCRIPTION
    Run from an elevated PowerShell (Windows PowerShell 5.1 or PowerShell 7) on a test machine:

        .\scripts\install.ps1                       # newest package under .\target
        .\scripts\install.ps1 -PackageDir <folder>  # a given ringmap_driver_package folder

    Steps:
      1. Checks that the shell is elevated.
      2. Checks that test signing is on (the effective state of this boot, and `bcdedit`), and if
         it is not, says how to turn it on. It never changes boot settings itself.
      3. Trusts the package's WDRLocalTestCert.cer (made by wdk-build's cargo-make flow) in
         LocalMachine\Root and LocalMachine\TrustedPublisher, so that PnP installs the test-signed
         catalog without a prompt.
      4. Creates the root-enumerated device node Root\RingMap if none exists yet.
      5. `pnputil /add-driver ringmap_driver.inf /install`: adds the package to the driver store
         and installs it on the device node.
      6. Waits for the device to start and prints what to do next.

    How the root device is made, and why this way: a root-enumerated device has no bus driver to
    report it, so something must create its device node. What exists:
      - `pnputil` (in every Windows) has /add-driver, /remove-device, /scan-devices, ... but
        Microsoft's documentation of its syntax lists no command that creates a device node.
      - `devcon install <inf> Root\RingMap` (WDK tools folder) does it: it calls SetupAPI
        (SetupDiCreateDeviceInfo with DICD_GENERATE_ID, SetupDiSetDeviceRegistryProperty with
        SPDRP_HARDWAREID, SetupDiCallClassInstaller(DIF_REGISTERDEVICE)), then installs the INF.
      - `devgen /add /bus ROOT /hardwareid Root\RingMap` (WDK tools folder, Windows 11 22H2 WDK and
        later) creates a persistent root device; Microsoft says it is for testing only and may not
        be redistributed.
    Both tools come with the WDK, which a test machine often lacks, so this script makes the same
    three SetupAPI calls devcon makes (through Add-Type), and then lets pnputil install the driver.
    With the WDK at hand, `devgen /add /bus ROOT /hardwareid Root\RingMap` followed by step 5 is
    equivalent.

    Not run from this repository's CI: written and reviewed on Linux, where it cannot run.

.PARAMETER PackageDir
    The driver package folder (holding ringmap_driver.inf, .sys, .cat and WDRLocalTestCert.cer).
#>
[CmdletBinding()]
param(
    [string] $PackageDir
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$HardwareId = 'Root\RingMap'
$InfName = 'ringmap_driver.inf'
$CertName = 'WDRLocalTestCert.cer'
$SystemClassGuid = '4d36e97d-e325-11ce-bfc1-08002be10318' # Class = System in the INF

function Fail([string] $Message) {
    Write-Host ''
    Write-Host "ringmap install: $Message" -ForegroundColor Red
    exit 1
}

# --- 1. elevation ------------------------------------------------------------------------------
$principal = New-Object Security.Principal.WindowsPrincipal([Security.Principal.WindowsIdentity]::GetCurrent())
if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
    Fail 'this script installs a kernel driver and must run elevated. Open PowerShell with "Run as administrator" and run it again.'
}

# --- package folder ----------------------------------------------------------------------------
if (-not $PackageDir) {
    # wdk-build puts the package in target\<profile>\ringmap_driver_package, or in
    # target\<triple>\<profile>\ringmap_driver_package when built with --target.
    $targetDir = Join-Path (Split-Path -Parent $PSScriptRoot) 'target'
    $candidates = @()
    if (Test-Path $targetDir) {
        $candidates = @(Get-ChildItem -Path $targetDir -Directory -Recurse -Depth 2 -Filter 'ringmap_driver_package' -ErrorAction SilentlyContinue |
            Where-Object { Test-Path (Join-Path $_.FullName $InfName) } |
            Sort-Object LastWriteTime -Descending)
    }
    if ($candidates.Count -eq 0) {
        Fail "no driver package found under $targetDir. Build it first with 'cargo make' (see the README's Windows section), or pass -PackageDir <folder>."
    }
    $PackageDir = $candidates[0].FullName
}
$PackageDir = (Resolve-Path $PackageDir).Path
$inf = Join-Path $PackageDir $InfName
$cer = Join-Path $PackageDir $CertName
foreach ($file in @($inf, (Join-Path $PackageDir 'ringmap_driver.sys'), (Join-Path $PackageDir 'ringmap_driver.cat'), $cer)) {
    if (-not (Test-Path $file)) {
        Fail "$file is missing. The package folder must be the output of 'cargo make' (wdk-build's package-driver-flow)."
    }
}
Write-Host "Package: $PackageDir"

# --- 2. test signing ---------------------------------------------------------------------------
# The effective state of this boot comes from NtQuerySystemInformation(SystemCodeIntegrityInformation),
# CODEINTEGRITY_OPTION_TEST_SIGN = 0x2 (the same check eBPF for Windows makes); bcdedit shows the
# setting for the next boot. bcdedit's output is localised, so only the keyword is matched.
Add-Type -TypeDefinition @'
using System;
using System.Runtime.InteropServices;
public static class RingMapCodeIntegrity {
    [StructLayout(LayoutKind.Sequential)]
    struct SYSTEM_CODEINTEGRITY_INFORMATION { public uint Length; public uint CodeIntegrityOptions; }
    [DllImport("ntdll.dll")]
    static extern int NtQuerySystemInformation(int infoClass, ref SYSTEM_CODEINTEGRITY_INFORMATION info, int length, out int returned);
    public static bool TestSigningActive() {
        SYSTEM_CODEINTEGRITY_INFORMATION info = new SYSTEM_CODEINTEGRITY_INFORMATION();
        info.Length = (uint)Marshal.SizeOf(typeof(SYSTEM_CODEINTEGRITY_INFORMATION));
        int returned;
        int status = NtQuerySystemInformation(103 /* SystemCodeIntegrityInformation */, ref info, (int)info.Length, out returned);
        return status == 0 && (info.CodeIntegrityOptions & 0x2) != 0;
    }
}
'@
$testSigningActive = [RingMapCodeIntegrity]::TestSigningActive()
$bcd = (& bcdedit /enum '{current}' 2>&1 | Out-String)
$bcdLine = ($bcd -split "`r?`n" | Where-Object { $_ -match '^\s*testsigning\s+' } | Select-Object -First 1)
$bcdSaysOn = $false
if ($bcdLine) { $bcdSaysOn = ($bcdLine -notmatch '\s(No|Nein|Non|Nee|Nej|Nei|Ei)\s*$') }
if (-not $testSigningActive) {
    if ($bcdSaysOn) {
        Fail 'test signing is set for the next boot (bcdedit) but not active in this one. Restart Windows, then run this script again.'
    }
    Fail (@(
        'test signing is off, so Windows will not load a test-signed driver. To turn it on:',
        '    bcdedit /set testsigning on        (elevated; Secure Boot must be off in the firmware settings,',
        '                                        and BitLocker may ask for its recovery key on the next boot)',
        '  then restart Windows and run this script again. To turn it off later: bcdedit /set testsigning off'
    ) -join [Environment]::NewLine)
}
Write-Host 'Test signing: on'

# --- 3. trust the test certificate -------------------------------------------------------------
foreach ($store in @('Root', 'TrustedPublisher')) {
    Import-Certificate -FilePath $cer -CertStoreLocation "Cert:\LocalMachine\$store" | Out-Null
}
Write-Host "Trusted $CertName in LocalMachine\Root and LocalMachine\TrustedPublisher"

# --- 4. the root device node -------------------------------------------------------------------
function Get-RingMapDevices {
    @(Get-PnpDevice -ErrorAction SilentlyContinue | Where-Object { $_.HardwareID -contains $HardwareId })
}

if (@(Get-RingMapDevices).Count -eq 0) {
    Add-Type -TypeDefinition @'
using System;
using System.ComponentModel;
using System.Runtime.InteropServices;
public static class RingMapRootDevice {
    [StructLayout(LayoutKind.Sequential)]
    struct SP_DEVINFO_DATA { public uint cbSize; public Guid ClassGuid; public uint DevInst; public IntPtr Reserved; }
    [DllImport("setupapi.dll", SetLastError = true)]
    static extern IntPtr SetupDiCreateDeviceInfoList(ref Guid classGuid, IntPtr hwndParent);
    [DllImport("setupapi.dll", SetLastError = true, CharSet = CharSet.Unicode)]
    static extern bool SetupDiCreateDeviceInfoW(IntPtr set, string deviceName, ref Guid classGuid, string description, IntPtr hwndParent, uint flags, ref SP_DEVINFO_DATA data);
    [DllImport("setupapi.dll", SetLastError = true)]
    static extern bool SetupDiSetDeviceRegistryPropertyW(IntPtr set, ref SP_DEVINFO_DATA data, uint property, byte[] buffer, uint size);
    [DllImport("setupapi.dll", SetLastError = true)]
    static extern bool SetupDiCallClassInstaller(uint installFunction, IntPtr set, ref SP_DEVINFO_DATA data);
    [DllImport("setupapi.dll", SetLastError = true)]
    static extern bool SetupDiDestroyDeviceInfoList(IntPtr set);
    const uint DICD_GENERATE_ID = 0x1, SPDRP_HARDWAREID = 0x1, DIF_REGISTERDEVICE = 0x19;

    // Creates ROOT\<rootName>\NNNN with the given hardware ID; what `devcon install` does first.
    public static void Create(string classGuid, string rootName, string hardwareId) {
        Guid guid = new Guid(classGuid);
        IntPtr set = SetupDiCreateDeviceInfoList(ref guid, IntPtr.Zero);
        if (set == new IntPtr(-1)) throw new Win32Exception(Marshal.GetLastWin32Error(), "SetupDiCreateDeviceInfoList");
        try {
            SP_DEVINFO_DATA data = new SP_DEVINFO_DATA();
            data.cbSize = (uint)Marshal.SizeOf(typeof(SP_DEVINFO_DATA));
            if (!SetupDiCreateDeviceInfoW(set, rootName, ref guid, null, IntPtr.Zero, DICD_GENERATE_ID, ref data))
                throw new Win32Exception(Marshal.GetLastWin32Error(), "SetupDiCreateDeviceInfo");
            byte[] ids = System.Text.Encoding.Unicode.GetBytes(hardwareId + "\0\0"); // REG_MULTI_SZ
            if (!SetupDiSetDeviceRegistryPropertyW(set, ref data, SPDRP_HARDWAREID, ids, (uint)ids.Length))
                throw new Win32Exception(Marshal.GetLastWin32Error(), "SetupDiSetDeviceRegistryProperty(SPDRP_HARDWAREID)");
            if (!SetupDiCallClassInstaller(DIF_REGISTERDEVICE, set, ref data))
                throw new Win32Exception(Marshal.GetLastWin32Error(), "SetupDiCallClassInstaller(DIF_REGISTERDEVICE)");
        } finally {
            SetupDiDestroyDeviceInfoList(set);
        }
    }
}
'@
    try {
        [RingMapRootDevice]::Create($SystemClassGuid, 'RingMap', $HardwareId)
    } catch {
        Fail "could not create the root device node $HardwareId ($($_.Exception.Message)). With the WDK installed, 'devgen /add /bus ROOT /hardwareid $HardwareId' does the same; then run this script again."
    }
    Write-Host "Created root device node with hardware ID $HardwareId"
} else {
    Write-Host "Root device node $HardwareId already exists; updating its driver"
}

# --- 5. driver store + install on the device ---------------------------------------------------
$pnputilOutput = (& pnputil /add-driver $inf /install 2>&1 | Out-String)
$pnputilExit = $LASTEXITCODE
Write-Host $pnputilOutput.TrimEnd()
# 0 = success, 3010 = success, reboot required (ERROR_SUCCESS_REBOOT_REQUIRED).
if ($pnputilExit -ne 0 -and $pnputilExit -ne 3010) {
    Fail "pnputil /add-driver failed (exit code $pnputilExit). Look at %windir%\INF\setupapi.dev.log for the reason; a signature error usually means the certificate or test signing step did not take."
}
if ($pnputilExit -eq 3010) {
    Write-Host 'Windows asks for a restart to finish the installation.' -ForegroundColor Yellow
}

# --- 6. wait for the device --------------------------------------------------------------------
$deadline = (Get-Date).AddSeconds(30)
do {
    $devices = @(Get-RingMapDevices)
    $started = @($devices | Where-Object { $_.Status -eq 'OK' })
    if ($started.Count -gt 0) { break }
    Start-Sleep -Milliseconds 500
} while ((Get-Date) -lt $deadline)

if ($started.Count -eq 0) {
    $state = ($devices | ForEach-Object { "$($_.InstanceId): status $($_.Status), problem code $($_.ConfigManagerErrorCode)" }) -join '; '
    if ($devices.Count -eq 0) { $state = "no device node with hardware ID $HardwareId" }
    Fail "the driver is installed but the device did not start ($state). 'pnputil /enum-devices /instanceid <id> /drivers' and %windir%\INF\setupapi.dev.log tell why; Driver Verifier and a kernel debugger tell the rest."
}
if ($started.Count -gt 1) {
    Write-Host "Note: $($started.Count) device nodes have hardware ID $HardwareId; scripts\uninstall.ps1 removes all of them." -ForegroundColor Yellow
}

Write-Host ''
Write-Host "ringmap driver installed and running: $($started[0].InstanceId)" -ForegroundColor Green
Write-Host 'Next: `ringmap stat`, `ringmap tail`, or `$env:RINGMAP_BACKEND = "driver"; cargo test -p ringmap-tests`.'
Write-Host 'The ring capacity is the RingCapacity value (bytes) under the device''s "Device Parameters" key; restart the device after changing it.'
