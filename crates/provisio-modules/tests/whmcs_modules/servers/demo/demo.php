<?php
/**
 * A WHMCS server module written for Provisio's tests, in WHMCS's own contract only: it
 * would load in WHMCS unchanged. It drives a small REST remote (accounts with a status, a
 * package and a pass key) at serverhostname:serverport, authenticating with HTTP basic
 * auth (serverusername / serverpassword) and an API key header (serveraccesshash).
 * Follows seed 002: a product option says whether to retrieve the customer's pass key,
 * which is stored into the client's "Pass Key" custom field.
 */

if (!defined("WHMCS")) {
    die("This file cannot be accessed directly");
}

function demo_MetaData()
{
    return [
        'DisplayName' => 'Demo Backup Server',
        'APIVersion' => '1.1',
        'RequiresServer' => true,
    ];
}

function demo_ConfigOptions()
{
    return [
        'Package Name' => ['Type' => 'text', 'Size' => '25', 'Default' => 'basic', 'Description' => 'Package on the backup server'],
        'Product Key' => ['Type' => 'password', 'Size' => '25', 'Description' => 'Key the remote expects for this product'],
        'Send Mail' => ['Type' => 'yesno', 'Description' => 'Let the backup server send its own account email'],
        'Account Type' => ['Type' => 'dropdown', 'Options' => 'Signup Reseller,Signup Customer', 'Default' => 'Signup Customer'],
        'Region' => ['Type' => 'radio', 'Options' => ['eu' => 'Europe', 'us' => 'America'], 'Default' => 'eu'],
        'Welcome Note' => ['Type' => 'textarea', 'Rows' => '3', 'Cols' => '40'],
        'Retrieve Customer Pass Key' => ['Type' => 'yesno', 'Default' => 'on', 'Description' => 'Store the customer pass key in the client account'],
    ];
}

function demo_AdminCustomButtonArray()
{
    return ['Reset Quota' => 'resetQuota'];
}

/** One call to the remote; returns [status, decoded body]. */
function demo_call(array $params, $method, $path, $body = null)
{
    $scheme = $params['serversecure'] ? 'https' : 'http';
    $url = $scheme . '://' . $params['serverhostname'] . ':' . $params['serverport'] . $path;
    $headers = [
        'Authorization: Basic ' . base64_encode($params['serverusername'] . ':' . $params['serverpassword']),
        'X-Api-Key: ' . $params['serveraccesshash'],
    ];
    $payload = '';
    if ($body !== null) {
        $headers[] = 'Content-Type: application/json';
        $payload = json_encode($body);
    }
    $context = stream_context_create(['http' => [
        'method' => $method,
        'header' => implode("\r\n", $headers),
        'content' => $payload,
        'ignore_errors' => true,
        'timeout' => 10,
    ]]);
    $raw = @file_get_contents($url, false, $context);
    if ($raw === false) {
        throw new Exception("could not reach $url");
    }
    $status = 0;
    if (isset($http_response_header[0]) && preg_match('#^HTTP/\S+ (\d{3})#', $http_response_header[0], $m)) {
        $status = (int) $m[1];
    }
    $decoded = json_decode($raw, true);
    logModuleCall(
        'demo',
        $method . ' ' . $path,
        ['body' => $body, 'auth' => $headers[0], 'key' => $params['serveraccesshash']],
        $raw,
        $decoded,
        [$params['serverpassword'], $params['serveraccesshash'], $params['password'], $params['configoption2'],
         base64_encode($params['serverusername'] . ':' . $params['serverpassword'])]
    );
    return [$status, is_array($decoded) ? $decoded : []];
}

function demo_result(array $answer)
{
    list($status, $body) = $answer;
    if ($status >= 200 && $status < 300) {
        return 'success';
    }
    return 'Backup server refused (' . $status . '): ' . (isset($body['error']) ? $body['error'] : 'no reason');
}

function demo_CreateAccount(array $params)
{
    $answer = demo_call($params, 'POST', '/accounts', [
        'username' => $params['username'],
        'password' => $params['password'],
        'package' => $params['configoption1'],
        'product_key' => $params['configoption2'],
        'send_mail' => $params['configoption3'] === 'on',
        'type' => $params['configoption4'],
        'region' => $params['configoption5'],
        'note' => $params['configoption6'],
        'email' => $params['clientsdetails']['email'],
        'name' => $params['clientsdetails']['firstname'] . ' ' . $params['clientsdetails']['lastname'],
        'domain' => $params['domain'],
    ]);
    $result = demo_result($answer);
    if ($result === 'success' && $params['configoption7'] === 'on' && isset($answer[1]['pass_key'])) {
        // In WHMCS this would be written to tblcustomfieldsvalues; Provisio's runner offers
        // the same through provisio_set_custom_field.
        if (function_exists('provisio_set_custom_field')) {
            provisio_set_custom_field('Pass Key', $answer[1]['pass_key']);
        }
    }
    return $result;
}

function demo_SuspendAccount(array $params)
{
    return demo_result(demo_call($params, 'POST', '/accounts/' . rawurlencode($params['username']) . '/suspend', ['reason' => $params['suspendreason']]));
}

function demo_UnsuspendAccount(array $params)
{
    return demo_result(demo_call($params, 'POST', '/accounts/' . rawurlencode($params['username']) . '/unsuspend'));
}

function demo_TerminateAccount(array $params)
{
    return demo_result(demo_call($params, 'DELETE', '/accounts/' . rawurlencode($params['username'])));
}

function demo_ChangePassword(array $params)
{
    return demo_result(demo_call($params, 'PUT', '/accounts/' . rawurlencode($params['username']) . '/password', ['password' => $params['password']]));
}

function demo_ChangePackage(array $params)
{
    return demo_result(demo_call($params, 'PUT', '/accounts/' . rawurlencode($params['username']) . '/package', ['package' => $params['configoption1']]));
}

function demo_resetQuota(array $params)
{
    return demo_result(demo_call($params, 'POST', '/accounts/' . rawurlencode($params['username']) . '/reset-quota'));
}

function demo_TestConnection(array $params)
{
    try {
        list($status, $body) = demo_call($params, 'GET', '/health');
        if ($status === 200) {
            return ['success' => true, 'error' => ''];
        }
        return ['success' => false, 'error' => 'Backup server answered ' . $status];
    } catch (Exception $e) {
        return ['success' => false, 'error' => $e->getMessage()];
    }
}

function demo_ServiceSingleSignOn(array $params)
{
    list($status, $body) = demo_call($params, 'POST', '/sso/' . rawurlencode($params['username']));
    if ($status === 200 && isset($body['url'])) {
        return ['success' => true, 'redirectTo' => $body['url']];
    }
    return ['success' => false, 'errorMsg' => 'no login link (' . $status . ')'];
}

function demo_ListAccounts(array $params)
{
    list($status, $body) = demo_call($params, 'GET', '/accounts');
    if ($status !== 200) {
        return ['success' => false, 'error' => 'Backup server answered ' . $status];
    }
    $accounts = [];
    foreach ($body['accounts'] as $a) {
        $accounts[] = [
            'email' => $a['email'],
            'username' => $a['username'],
            'domain' => $a['domain'],
            'uniqueIdentifier' => $a['username'],
            'product' => $a['package'],
            'primaryip' => '',
            'created' => $a['created'],
            'status' => $a['suspended'] ? \WHMCS\Service\Status::SUSPENDED : \WHMCS\Service\Status::ACTIVE,
        ];
    }
    return ['success' => true, 'accounts' => $accounts];
}
