<?php
/**
 * Stands in for WHMCS, and only for WHMCS: it defines logModuleCall (masking $replaceVars as
 * WHMCS's module log does) and the module's two table seams, builds $params the way WHMCS
 * documents them, and calls the module's functions the way WHMCS would. Everything else is
 * real: a Provisio server driving the `http` module against a REST remote. Run by
 * crates/provisio-server/tests/it/whmcs_bridge.rs, which passes the addresses and keys.
 */

declare(strict_types=1);

define('PROVISIO_HARNESS', true);

$env = static function (string $name): string {
    $v = getenv($name);
    if ($v === false || $v === '') {
        fwrite(STDERR, "{$name} is not set\n");
        exit(2);
    }
    return $v;
};
$provisioUrl = $env('PROVISIO_URL');
$billingKey = $env('PROVISIO_BILLING_KEY');
$adminKey = $env('PROVISIO_ADMIN_KEY');
$remoteUrl = $env('REMOTE_URL');
$bulk = (int)$env('BULK_SERVICES');

// ---- what WHMCS provides -----------------------------------------------------------

/** WHMCS's module log, as stored: each entry after masking its $replaceVars. */
$GLOBALS['module_log'] = [];

function logModuleCall($module, $action, $requestString, $responseData, $processedData = '', $replaceVars = []): void
{
    $text = static fn ($v): string => is_string($v) ? $v : (string)json_encode($v, JSON_UNESCAPED_SLASHES);
    $entry = [$module, $action, $text($requestString), $text($responseData), $text($processedData)];
    $GLOBALS['module_log_raw'][] = $entry;
    $vars = array_filter(array_map('strval', (array)$replaceVars), static fn ($s) => $s !== '');
    foreach ($entry as $i => $part) {
        foreach ($vars as $secret) {
            $part = str_replace([$secret, trim(json_encode($secret), '"')], '***', $part);
        }
        $entry[$i] = $part;
    }
    $GLOBALS['module_log'][] = $entry;
}

/** tblhosting as this harness keeps it: service id => columns written. */
$GLOBALS['tblhosting'] = [];
/** Custom field values: field name => [service or client id => value]. */
$GLOBALS['customfields'] = [];
/** The custom fields this WHMCS has: seed 002 asks for a client field "Pass Key". */
$GLOBALS['customfield_defs'] = ['Pass Key' => 'client', 'Remote ID' => 'product'];

function provisio_whmcs_update_hosting(int $serviceId, array $fields, ?int $serverId = null): void
{
    $GLOBALS['tblhosting'][$serviceId] = array_merge($GLOBALS['tblhosting'][$serviceId] ?? [], $fields, ['server' => $serverId]);
}

function provisio_whmcs_save_custom_field(array $params, string $fieldName, string $value): bool
{
    $type = $GLOBALS['customfield_defs'][$fieldName] ?? null;
    if ($type === null) {
        return false;
    }
    $owner = $type === 'client' ? (int)$params['userid'] : (int)$params['serviceid'];
    $GLOBALS['customfields'][$fieldName][$owner] = $value;
    return true;
}

require __DIR__ . '/../modules/servers/provisio/provisio.php';

use Provisio\Whmcs\Client;

// ---- the checks ----------------------------------------------------------------------

$failures = 0;
function check(bool $ok, string $what, mixed $detail = null): void
{
    global $failures;
    echo ($ok ? 'ok   ' : 'FAIL ') . $what . ($ok || $detail === null ? '' : ' -- ' . json_encode($detail, JSON_UNESCAPED_SLASHES)) . "\n";
    if (!$ok) {
        $failures++;
    }
}

function http(string $method, string $url, ?array $body = null, array $headers = []): array
{
    $ch = curl_init($url);
    $h = array_merge(['Accept: application/json'], $headers);
    if ($body !== null) {
        $h[] = 'Content-Type: application/json';
        curl_setopt($ch, CURLOPT_POSTFIELDS, json_encode($body));
    }
    curl_setopt_array($ch, [CURLOPT_CUSTOMREQUEST => $method, CURLOPT_RETURNTRANSFER => true, CURLOPT_HTTPHEADER => $h, CURLOPT_TIMEOUT => 30]);
    $raw = (string)curl_exec($ch);
    $status = (int)curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
    curl_close($ch);
    return [$status, json_decode($raw, true)];
}

$remote = static fn (): array => http('GET', "$remoteUrl/_state")[1];
$admin = static fn (string $method, string $path, ?array $body = null): array => http($method, $provisioUrl . $path, $body, ["Authorization: Bearer $adminKey"]);
/** Provisio's job, read with the admin key (not through the module). */
$job = static fn (int $id): array => $admin('GET', "/v1/jobs/$id")[1];
$jobsOf = static function (string $serviceExternalId) use ($admin): array {
    [, $s] = $admin('GET', '/v1/services/by-external-id/' . $serviceExternalId);
    return $admin('GET', '/v1/services/' . $s['id'] . '/jobs?limit=1000')[1]['items'];
};

$url = parse_url($provisioUrl);
$password = 'Whmcs-Pw-' . bin2hex(random_bytes(6));
$serverPassword = 'unused-server-password-' . bin2hex(random_bytes(4));
/** $params as WHMCS documents them for a service on a server of this module. */
$params = [
    'accountid' => 101, 'serviceid' => 101, 'userid' => 11, 'pid' => 3, 'packageid' => 3,
    'domain' => 'shop.example.test', 'username' => 'whmcs101', 'password' => $password,
    'producttype' => 'other', 'moduletype' => 'provisio', 'moduleparams' => [],
    'configoption1' => 'web', 'configoption2' => '5', 'configoption3' => "passkey=Pass Key\nremote_id=Remote ID", 'configoption4' => '',
    'customfields' => [], 'configoptions' => [],
    'clientsdetails' => ['userid' => 11, 'id' => 11, 'firstname' => 'Ada', 'lastname' => 'Lovelace', 'companyname' => '',
        'email' => 'ada@example.test', 'address1' => '1 Analytical St', 'city' => 'London', 'country' => 'GB', 'currency_code' => 'USD'],
    'server' => true, 'serverid' => 1, 'serverip' => $url['host'], 'serverhostname' => $url['host'],
    'serverusername' => '', 'serverpassword' => $serverPassword, 'serveraccesshash' => $billingKey,
    'serversecure' => false, 'serverport' => (string)$url['port'], 'serverhttpprefix' => 'http',
    'status' => 'Pending',
];

$meta = provisio_MetaData();
check($meta['RequiresServer'] === true && $meta['DisplayName'] === 'Provisio', 'MetaData describes a server module');
$opts = array_keys(provisio_ConfigOptions());
check($opts[0] === 'Provisio product' && $opts[1] === 'Wait for outcome (seconds)', 'ConfigOptions: product then wait', $opts);

// TestConnection: the server record's URL and key.
$t = provisio_TestConnection($params);
check($t['success'] === true, 'TestConnection with the billing key', $t);
$t = provisio_TestConnection(['serveraccesshash' => 'wrong-' . $billingKey] + $params);
check($t['success'] === false && str_contains($t['error'], '401'), 'TestConnection refuses a wrong key', $t);
$t = provisio_TestConnection(['serverport' => '1'] + $params);
check($t['success'] === false && str_contains($t['error'], 'did not answer'), 'TestConnection reports an unreachable URL', $t);

// CreateAccount against a slow remote: WHMCS hears "still running", never "success" early.
http('PUT', "$remoteUrl/_slow", ['ms' => 3000]);
$params['configoption2'] = '1';
$r = provisio_CreateAccount($params);
check(preg_match('/^queued in Provisio as job (\d+), still running$/', $r, $m) === 1, 'CreateAccount on a slow remote says it is still running', $r);
$createJob = (int)($m[1] ?? 0);
check(!isset($remote()['accounts']['whmcs101']), 'the remote has not finished the create yet');
check(in_array($job($createJob)['state'] ?? '', ['pending', 'running'], true), 'and Provisio has not confirmed it', $job($createJob));
// WHMCS's module queue retries while it still runs: the same job, no second create.
$r = provisio_CreateAccount($params);
check($r === "queued in Provisio as job {$createJob}, still running", 'a retry while it runs names the same job', $r);
$deadline = microtime(true) + 15;
while (($job($createJob)['state'] ?? '') !== 'done' && microtime(true) < $deadline) {
    usleep(100_000);
}
$params['configoption2'] = '20';
$r = provisio_CreateAccount($params);
check($r === 'success', 'the retry after it finished answers success', $r);
$state = $remote();
check(($state['create_requests']['whmcs101'] ?? 0) === 1, 'one create reached the remote', $state['create_requests']);
check(($job($createJob)['state'] ?? '') === 'done', 'Provisio confirmed the create before success');
$passKey = $state['accounts']['whmcs101']['passkey'] ?? null;
check($passKey !== null && ($GLOBALS['customfields']['Pass Key'][11] ?? null) === $passKey, 'the pass key is in the client custom field "Pass Key"', $GLOBALS['customfields']);
check(($GLOBALS['customfields']['Remote ID'][101] ?? null) === (string)$state['accounts']['whmcs101']['id'], 'an output lands in the service\'s own custom field', $GLOBALS['customfields']);
// WHMCS sends the welcome email on success; seed 002's template line reads the field.
$welcome = str_replace('{$client_custom_fields.0}', $GLOBALS['customfields']['Pass Key'][11] ?? '', 'Your Customer PassKey : {$client_custom_fields.0}');
check($welcome === "Your Customer PassKey : $passKey", 'the welcome email carries the pass key');
$params['customfields'] = ['Pass Key' => $passKey];
$params['status'] = 'Active';
[, $client] = $admin('GET', '/v1/clients/by-external-id/11');
check(($client['email'] ?? '') === 'ada@example.test' && $client['name'] === 'Ada Lovelace', 'the Provisio client was made from WHMCS\'s client', $client);

/** Runs a lifecycle function and checks success came only after Provisio's confirmation. */
$lifecycle = static function (string $fn, array $p, string $what, callable $effect) use ($jobsOf, $remote): void {
    $before = count($jobsOf('101'));
    $r = $fn($p);
    $jobs = $jobsOf('101');
    $last = end($jobs);
    check($r === 'success', "$fn: $what", $r);
    check(count($jobs) === $before + 1 && $last['state'] === 'done', "$fn: one job, done in Provisio", $last);
    check($effect($remote()), "$fn: the remote shows it", $remote()['accounts']['whmcs101'] ?? null);
};

$lifecycle('provisio_SuspendAccount', ['suspendreason' => 'Overdue on Payment'] + $params, 'overdue suspension',
    static fn ($s) => $s['accounts']['whmcs101']['status'] === 'suspended' && $s['accounts']['whmcs101']['reason'] === 'non-payment');
[, $svc] = $admin('GET', '/v1/services/by-external-id/101');
check(($svc['suspension']['reason'] ?? '') === 'non-payment', 'Provisio records the reason non-payment', $svc['suspension'] ?? null);
$r = provisio_SuspendAccount(['suspendreason' => 'Overdue on Payment'] + $params);
check($r === 'success' && count(array_filter($remote()['effects'], fn ($e) => str_starts_with($e, 'suspend whmcs101'))) === 1, 'a repeated suspend is the same request, not a second one', $r);
$lifecycle('provisio_UnsuspendAccount', $params, 'unsuspend', static fn ($s) => $s['accounts']['whmcs101']['status'] === 'active');
$lifecycle('provisio_SuspendAccount', ['suspendreason' => 'Customer asked for a break'] + $params, 'a suspension with staff\'s reason',
    static fn ($s) => $s['accounts']['whmcs101']['reason'] === 'Customer asked for a break');
$lifecycle('provisio_UnsuspendAccount', $params, 'a second unsuspend is a new request', static fn ($s) => $s['accounts']['whmcs101']['status'] === 'active');
$newPassword = 'Changed-Pw-' . bin2hex(random_bytes(6));
$lifecycle('provisio_ChangePassword', ['password' => $newPassword] + $params, 'new password',
    static fn ($s) => $s['accounts']['whmcs101']['password'] === $newPassword);
$params['password'] = $newPassword;
$lifecycle('provisio_ChangePackage', ['configoption1' => 'web-big'] + $params, 'upgrade', static fn ($s) => $s['accounts']['whmcs101']['package'] === 'big');
$params['configoption1'] = 'web-big';
$lifecycle('provisio_Renew', $params, 'renewal', static fn ($s) => $s['accounts']['whmcs101']['renewals'] === 1);

$r = provisio_ChangePackage(['configoption1' => 'no-such-product'] + $params);
check($r !== 'success' && str_contains($r, 'no-such-product'), 'a package Provisio lacks is an error naming it', $r);

// Custom buttons from the server's custom actions.
$buttons = provisio_AdminCustomButtonArray($params);
check($buttons === ['Reset quota' => 'action1'], 'AdminCustomButtonArray offers the custom action', $buttons);
check(provisio_ClientAreaCustomButtonArray($params) === $buttons, 'ClientAreaCustomButtonArray too');
$lifecycle('provisio_action1', $params, 'custom action reset_quota', static fn ($s) => $s['accounts']['whmcs101']['disk_mb'] === 0);

// Single sign-on: Provisio's login link (from the remote).
$sso = provisio_ServiceSingleSignOn($params);
check($sso['success'] === true && str_starts_with($sso['redirectTo'], 'https://panel.remote.test/sso/whmcs101/'), "ServiceSingleSignOn redirects to the remote's link", $sso);
// Server-level login, as WHMCS calls it from the servers list: no service in $params.
$serverOnly = array_diff_key($params, array_flip(['serviceid', 'userid', 'username', 'password', 'domain']));
$sso = provisio_AdminSingleSignOn($serverOnly);
check($sso['success'] === true && str_ends_with($sso['redirectTo'], '/console'), 'AdminSingleSignOn opens the Provisio console', $sso);

$tab = provisio_AdminServicesTabFields($params);
check(str_contains($tab['Provisio status'] ?? '', 'active') && str_contains($tab['Provisio jobs'] ?? '', 'renew')
    && str_contains($tab['Provisio console'] ?? '', '/v1/services/'), 'AdminServicesTabFields shows status, jobs and a link', $tab);
$failing = provisio_AdminServicesTabFields(['serviceid' => 999999] + $params);
check(str_contains(implode(' ', $failing), 'Not in Provisio'), 'the tab of a service Provisio lacks says so', $failing);

$list = provisio_ListAccounts($params);
$mine = array_values(array_filter($list['accounts'] ?? [], fn ($a) => $a['username'] === 'whmcs101'));
check($list['success'] === true && count($list['accounts']) === $bulk + 1 && ($mine[0]['status'] ?? '') === 'Active'
    && ($mine[0]['product'] ?? '') === 'web-big' && ($mine[0]['email'] ?? '') === 'ada@example.test' && ($mine[0]['whmcs_service_id'] ?? '') === '101',
    'ListAccounts lists Provisio\'s records with product names', [count($list['accounts'] ?? []), $mine[0] ?? $list]);
check(($mine[0]['provisio_drift'] ?? null) === [] && !in_array('stray7', array_column($list['accounts'], 'username'), true),
    'before any audit: no drift, no orphan', $mine[0] ?? null);

// Provisio's audits of the server (by staff or their schedule; here with the admin key). The
// remote holds an account Provisio lacks (stray7); before the second audit it also reports
// whmcs101 suspended behind Provisio's back.
$audit = static function () use ($admin): array {
    [$st, $started] = $admin('POST', '/v1/audits', ['server' => 'rest']);
    $a = $started[0] ?? [];
    $deadline = microtime(true) + 30;
    while (($a['state'] ?? '') === 'running' && microtime(true) < $deadline) {
        usleep(100_000);
        [, $a] = $admin('GET', '/v1/audits/' . (int)$a['id']);
    }
    check($st === 202 && ($a['state'] ?? '') === 'done', 'Provisio\'s audit of the server ran', [$st, $a]);
    return $a;
};
$first = $audit();
http('PUT', "$remoteUrl/_account/whmcs101", ['status' => 'suspended']);
$second = $audit();
http('PUT', "$remoteUrl/_account/whmcs101", ['status' => 'active']);
check(($first['counts']['orphan_remote'] ?? 0) === 1 && ($second['counts']['status_mismatch'] ?? 0) === 1, 'the audits found the orphan, then the drift', [$first, $second]);
// One audit per page, so the bridge must follow the audits' cursor to reach the last.
\Provisio\Whmcs\Bridge::$auditPageSize = 1;
$sent = Client::$sent;
$list = provisio_ListAccounts($params);
\Provisio\Whmcs\Bridge::$auditPageSize = 1000;
$by = array_column($list['accounts'] ?? [], null, 'username');
$stray = $by['stray7'] ?? [];
check($list['success'] === true && count($list['accounts']) === $bulk + 2, 'ListAccounts adds the orphan of the last audit', count($list['accounts'] ?? []));
check(array_keys($stray) === ['email', 'username', 'domain', 'uniqueIdentifier', 'product', 'primaryip', 'created', 'status',
        'provisio_service_id', 'whmcs_service_id', 'provisio_drift', 'provisio_audit_id']
    && $stray['uniqueIdentifier'] === 'stray7' && $stray['status'] === 'Suspended' && $stray['product'] === 'legacy'
    && $stray['provisio_service_id'] === null && $stray['provisio_drift'][0]['kind'] === 'orphan_remote',
    'the orphan in WHMCS\'s ListAccounts shape, with the remote\'s status and package', $stray);
check(($stray['provisio_audit_id'] ?? null) === (int)$second['id'], 'from the last finished audit', [$stray, $second['id'] ?? null]);
check(($by['whmcs101']['provisio_drift'] ?? null) === [['kind' => 'status_mismatch', 'provisio' => 'active', 'remote' => 'suspended']]
    && ($by['whmcs101']['status'] ?? '') === 'Active', 'the drifted account is marked, its status still Provisio\'s', $by['whmcs101'] ?? null);
check(($by['bulk3']['provisio_drift'] ?? null) === [], 'an account without drift is not', $by['bulk3'] ?? null);
check(Client::$sent - $sent >= 4, 'the audits were read page by page', Client::$sent - $sent);

// The usage update: Provisio's usage sync first (its schedule, here by hand), then WHMCS's cron.
[$st, $sync] = $admin('POST', '/v1/usage/syncs', ['server' => 'rest']);
$deadline = microtime(true) + 30;
while (!in_array($sync['state'] ?? '', ['done', 'partial', 'failed'], true) && microtime(true) < $deadline) {
    usleep(100_000);
    [, $sync] = $admin('GET', '/v1/usage/syncs/' . $sync['id']);
}
check(($sync['state'] ?? '') === 'done', 'Provisio\'s usage sync ran', $sync);
$sent = Client::$sent;
$r = provisio_UsageUpdate(['serverid' => 1] + array_intersect_key($params, array_flip(['serverip', 'serverhostname', 'serverusername', 'serverpassword', 'serveraccesshash', 'serversecure', 'serverport'])));
check($r === 'success', 'UsageUpdate succeeds', $r);
check(Client::$sent - $sent === 1, 'UsageUpdate sent one request for ' . ($bulk + 1) . ' services', Client::$sent - $sent);
$rows = $GLOBALS['tblhosting'];
check(count($rows) === $bulk + 1, 'every service got its usage row', count($rows));
$b7 = $rows[5007] ?? [];
check(($b7['diskusage'] ?? null) == 7 && ($b7['disklimit'] ?? null) == 2000 && ($b7['bwusage'] ?? null) == 7 && ($b7['bwlimit'] ?? null) == 0
    && isset($b7['lastupdate']) && $b7['server'] === 1, 'diskusage, disklimit, bwusage, bwlimit, lastupdate in MB', $b7);
$own = $rows[101] ?? [];
check(($own['diskusage'] ?? null) == 0 && ($own['bwusage'] ?? null) == 3, 'and the harness\'s own service', $own);

$lifecycle('provisio_TerminateAccount', $params, 'terminate', static fn ($s) => !isset($s['accounts']['whmcs101']));

// No secret in any module log entry.
$secrets = ['service password' => $password, 'new password' => $newPassword, 'billing key' => $billingKey,
    'server password' => $serverPassword, 'pass key' => $passKey];
$log = json_encode($GLOBALS['module_log'], JSON_UNESCAPED_SLASHES);
$raw = json_encode($GLOBALS['module_log_raw'], JSON_UNESCAPED_SLASHES);
foreach ($secrets as $what => $secret) {
    check(!str_contains($log, (string)$secret), "no $what in the module log");
}
// The calls did carry them (so the check above is not empty): the masking removed them.
foreach (['service password', 'new password', 'pass key'] as $what) {
    check(str_contains($raw, (string)$secrets[$what]), "the $what was in a call before masking");
}
$actions = array_unique(array_column($GLOBALS['module_log'], 1));
foreach (['TestConnection', 'CreateAccount', 'SuspendAccount', 'UnsuspendAccount', 'TerminateAccount', 'ChangePassword',
    'ChangePackage', 'Renew', 'ServiceSingleSignOn', 'AdminSingleSignOn', 'AdminCustomButtonArray', 'CustomAction1',
    'AdminServicesTabFields', 'UsageUpdate', 'ListAccounts'] as $a) {
    check(in_array($a, $actions, true), "logModuleCall for $a", array_values($actions));
}
check(str_contains($log, '***'), 'the log masked what it was told to');

echo count($GLOBALS['module_log']) . " module log entries, " . Client::$sent . " requests to Provisio\n";
if ($failures > 0) {
    echo "$failures CHECKS FAILED\n";
    exit(1);
}
echo "ALL CHECKS PASSED\n";
