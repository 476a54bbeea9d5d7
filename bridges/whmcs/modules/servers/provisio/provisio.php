<?php
/**
 * WHMCS server module "provisio": WHMCS's products delegate provisioning to Provisio.
 * Upload this folder to WHMCS's modules/servers/provisio; see bridges/whmcs/README.md.
 */

declare(strict_types=1);

if (!defined('WHMCS') && !defined('PROVISIO_HARNESS')) {
    die('This file cannot be accessed directly');
}

require_once __DIR__ . '/lib/Client.php';
require_once __DIR__ . '/lib/Bridge.php';
require_once __DIR__ . '/lib/Seams.php';

use Provisio\Whmcs\Bridge;
use Provisio\Whmcs\Client;

/** How many custom-action buttons the module can offer (functions provisio_action1…N). */
const PROVISIO_ACTION_SLOTS = 10;

function provisio_MetaData(): array
{
    return [
        'DisplayName' => 'Provisio',
        'APIVersion' => '1.1',
        'RequiresServer' => true,
        'DefaultNonSSLPort' => '8470',
        'DefaultSSLPort' => '443',
        'ServiceSingleSignOnLabel' => 'Log in to the service',
        'AdminSingleSignOnLabel' => 'Open the Provisio console',
        'ListAccountsUniqueIdentifierDisplayName' => 'Username',
        'ListAccountsUniqueIdentifierField' => 'username',
        'ListAccountsProductField' => 'configoption1',
    ];
}

function provisio_ConfigOptions(): array
{
    // The order is the contract: configoption1, configoption2, … in this order.
    return [
        'Provisio product' => [
            'Type' => 'text',
            'Size' => '40',
            'Description' => 'The product\'s name in Provisio (provisio product list)',
        ],
        'Wait for outcome (seconds)' => [
            'Type' => 'text',
            'Size' => '5',
            'Default' => '20',
            'Description' => 'How long an action waits for Provisio\'s confirmation before answering "still running"',
        ],
        'Outputs to custom fields' => [
            'Type' => 'textarea',
            'Rows' => '3',
            'Cols' => '40',
            'Default' => 'passkey=Pass Key',
            'Description' => 'One per line: Provisio output name=WHMCS custom field name (product field first, else client field)',
        ],
        'Console link' => [
            'Type' => 'text',
            'Size' => '60',
            'Description' => 'Optional: a link shown on the service tab; {service_id} becomes Provisio\'s service id',
        ],
    ];
}

/**
 * Runs one module function: its answer, and one logModuleCall entry with every secret the
 * call saw named in $replaceVars, so WHMCS's module log masks them.
 */
function provisio_call(string $action, array $params, callable $fn): mixed
{
    $bridge = null;
    try {
        $bridge = new Bridge($params);
        $result = $fn($bridge);
    } catch (\Throwable $e) {
        $result = null;
        $error = $e->getMessage();
    }
    $trace = $bridge ? $bridge->api()->trace() : [];
    $response = isset($error) ? ['error' => $error, 'calls' => $trace] : ['calls' => $trace];
    if (function_exists('logModuleCall')) {
        logModuleCall(
            'provisio',
            $action,
            ['serviceid' => $params['serviceid'] ?? null, 'userid' => $params['userid'] ?? null],
            $response,
            $result,
            provisio_secrets($params, $trace),
        );
    }
    if (isset($error)) {
        throw new \RuntimeException($error);
    }
    return $result;
}

/**
 * Every secret value one call handled: the service and server passwords, the API key,
 * passwords sent to Provisio, module outputs and the custom fields they are written to.
 *
 * @return list<string>
 */
function provisio_secrets(array $params, array $trace): array
{
    $found = [];
    foreach (['password', 'serverpassword', 'serveraccesshash'] as $k) {
        if (!empty($params[$k]) && is_scalar($params[$k])) {
            $found[] = (string)$params[$k];
        }
    }
    // A value under a name that looks like a credential (a `passkey` output, a password in
    // a body) is masked; a plain output such as a remote id is not, or every "1" would be.
    $secretName = static fn (string $k): bool => $k !== 'idempotency_key'
        && preg_match('/pass|secret|token|key$/i', $k) === 1;
    foreach (Bridge::outputMap($params) as $output => $field) {
        $value = $params['customfields'][$field] ?? '';
        if ($secretName($output) && is_scalar($value) && $value !== '') {
            $found[] = (string)$value;
        }
    }
    $walk = static function (mixed $v, ?string $key) use (&$walk, &$found, $secretName): void {
        if (is_array($v)) {
            foreach ($v as $k => $inner) {
                $walk($inner, is_string($k) ? $k : $key);
            }
        } elseif ($key !== null && is_scalar($v) && $v !== '' && $secretName($key)) {
            $found[] = (string)$v;
        }
    };
    $walk($trace, null);
    return array_values(array_unique($found));
}

/** A lifecycle function: "success" or the message WHMCS shows, never an exception. */
function provisio_lifecycle(string $action, array $params, callable $fn): string
{
    try {
        return (string)provisio_call($action, $params, $fn);
    } catch (\Throwable $e) {
        return $e->getMessage();
    }
}

function provisio_TestConnection(array $params): array
{
    try {
        provisio_call('TestConnection', $params, static function (Bridge $b): bool {
            $page = $b->api()->request('GET', '/v1/services', ['limit' => 1])->body;
            if (!is_array($page) || !array_key_exists('items', $page)) {
                throw new \RuntimeException('the address answers, but not as Provisio does: check Hostname, Port and Secure');
            }
            // The usage update needs this too; a key of too small a role fails here, not at night.
            $b->api()->request('GET', '/v1/usage/services', ['limit' => 1]);
            return true;
        });
        return ['success' => true, 'error' => ''];
    } catch (\Throwable $e) {
        return ['success' => false, 'error' => $e->getMessage()];
    }
}

function provisio_CreateAccount(array $params): string
{
    return provisio_lifecycle('CreateAccount', $params, static fn (Bridge $b) => $b->create());
}

function provisio_SuspendAccount(array $params): string
{
    return provisio_lifecycle('SuspendAccount', $params, static fn (Bridge $b) => $b->action('suspend', ['reason' => Bridge::suspendReason($params)]));
}

function provisio_UnsuspendAccount(array $params): string
{
    return provisio_lifecycle('UnsuspendAccount', $params, static fn (Bridge $b) => $b->action('unsuspend'));
}

function provisio_TerminateAccount(array $params): string
{
    return provisio_lifecycle('TerminateAccount', $params, static fn (Bridge $b) => $b->action('terminate'));
}

function provisio_ChangePassword(array $params): string
{
    return provisio_lifecycle('ChangePassword', $params, static function (Bridge $b) use ($params): string {
        $pw = (string)($params['password'] ?? '');
        return $b->action('change-password', $pw !== '' ? ['password' => $pw] : null);
    });
}

function provisio_ChangePackage(array $params): string
{
    return provisio_lifecycle('ChangePackage', $params, static fn (Bridge $b) => $b->action('change-package', ['product' => $b->productName()]));
}

function provisio_Renew(array $params): string
{
    return provisio_lifecycle('Renew', $params, static fn (Bridge $b) => $b->action('renew'));
}

function provisio_ServiceSingleSignOn(array $params): array
{
    return provisio_sign_on('ServiceSingleSignOn', $params);
}

/** WHMCS calls this from the servers list, for the server itself: it opens Provisio's console. */
function provisio_AdminSingleSignOn(array $params): array
{
    try {
        $url = (string)provisio_call('AdminSingleSignOn', $params, static fn (Bridge $b) => $b->consoleUrl());
        return ['success' => true, 'redirectTo' => $url];
    } catch (\Throwable $e) {
        return ['success' => false, 'errorMsg' => $e->getMessage()];
    }
}

function provisio_sign_on(string $action, array $params): array
{
    try {
        $url = (string)provisio_call($action, $params, static fn (Bridge $b) => $b->loginUrl());
        return ['success' => $url !== '', 'redirectTo' => $url];
    } catch (\Throwable $e) {
        return ['success' => false, 'errorMsg' => $e->getMessage()];
    }
}

/**
 * Buttons for the custom actions the service's Provisio server offers, label => function:
 * slot N is the server's N-th custom action (an order that changes only when the server's
 * settings do).
 */
function provisio_AdminCustomButtonArray(array $params = []): array
{
    return provisio_buttons('AdminCustomButtonArray', $params);
}

function provisio_ClientAreaCustomButtonArray(array $params = []): array
{
    return provisio_buttons('ClientAreaCustomButtonArray', $params);
}

function provisio_buttons(string $action, array $params): array
{
    if (empty($params['serviceid'])) {
        return [];
    }
    try {
        $names = provisio_call($action, $params, static fn (Bridge $b) => $b->customActions());
    } catch (\Throwable) {
        return [];
    }
    $buttons = [];
    foreach (array_slice($names, 0, PROVISIO_ACTION_SLOTS) as $i => $name) {
        $buttons[ucfirst(str_replace('_', ' ', $name))] = 'action' . ($i + 1);
    }
    return $buttons;
}

/** Runs the custom action in button slot $slot (see provisio_AdminCustomButtonArray). */
function provisio_custom_slot(int $slot, array $params): string
{
    return provisio_lifecycle('CustomAction' . $slot, $params, static function (Bridge $b) use ($slot): string {
        $names = $b->customActions();
        if (!isset($names[$slot - 1])) {
            return "Provisio offers no custom action in slot {$slot} for this service any more: reload the page";
        }
        return $b->action($names[$slot - 1]);
    });
}

function provisio_action1(array $params): string { return provisio_custom_slot(1, $params); }
function provisio_action2(array $params): string { return provisio_custom_slot(2, $params); }
function provisio_action3(array $params): string { return provisio_custom_slot(3, $params); }
function provisio_action4(array $params): string { return provisio_custom_slot(4, $params); }
function provisio_action5(array $params): string { return provisio_custom_slot(5, $params); }
function provisio_action6(array $params): string { return provisio_custom_slot(6, $params); }
function provisio_action7(array $params): string { return provisio_custom_slot(7, $params); }
function provisio_action8(array $params): string { return provisio_custom_slot(8, $params); }
function provisio_action9(array $params): string { return provisio_custom_slot(9, $params); }
function provisio_action10(array $params): string { return provisio_custom_slot(10, $params); }

/** The service tab: Provisio's status, the last jobs with their errors, a console link. */
function provisio_AdminServicesTabFields(array $params): array
{
    $h = static fn ($v): string => htmlspecialchars((string)$v, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8');
    try {
        return provisio_call('AdminServicesTabFields', $params, static function (Bridge $b) use ($params, $h): array {
            $s = $b->findService();
            if ($s === null) {
                return ['Provisio' => 'Not in Provisio yet (run Create)'];
            }
            $status = $h($s['status']);
            if (!empty($s['suspension'])) {
                $status .= ' (' . $h($s['suspension']['reason']) . ' since ' . $h($s['suspension']['since']) . ')';
            }
            $rows = '';
            foreach (array_slice(array_reverse($b->jobs((int)$s['id'])), 0, 5) as $j) {
                $rows .= '<tr><td>' . $h($j['id']) . '</td><td>' . $h($j['action']) . '</td><td>' . $h($j['state'])
                    . '</td><td>' . $h($j['updated_at']) . '</td><td>' . $h($j['last_error'] ?? '') . '</td></tr>';
            }
            $template = trim((string)($params['configoption4'] ?? ''));
            $link = $template !== ''
                ? str_replace('{service_id}', (string)(int)$s['id'], $template)
                : $b->api()->baseUrl() . '/v1/services/' . (int)$s['id'];
            return [
                'Provisio status' => $status . ' (service ' . $h($s['id']) . ', user ' . $h($s['username']) . ')',
                'Provisio jobs' => '<table class="table table-condensed"><tr><th>Job</th><th>Action</th><th>State</th><th>Updated</th><th>Error</th></tr>'
                    . $rows . '</table>',
                'Provisio console' => '<a href="' . $h($link) . '" target="_blank" rel="noopener">' . $h($link) . '</a>',
            ];
        });
    } catch (\Throwable $e) {
        return ['Provisio' => $h('Provisio could not be asked: ' . $e->getMessage())];
    }
}

/** WHMCS's daily cron, once per server: one request per 1,000 services of Provisio. */
function provisio_UsageUpdate(array $params): string
{
    return provisio_lifecycle('UsageUpdate', $params, static function (Bridge $b): string {
        $b->usageUpdate();
        return 'success';
    });
}

function provisio_ListAccounts(array $params): array
{
    try {
        $accounts = provisio_call('ListAccounts', $params, static fn (Bridge $b) => $b->listAccounts());
        return ['success' => true, 'accounts' => $accounts];
    } catch (\Throwable $e) {
        return ['success' => false, 'error' => $e->getMessage()];
    }
}
