<?php
/**
 * What the WHMCS functions of the `provisio` module do in Provisio: find or make the client
 * and the service by WHMCS's ids, request actions under idempotency keys that a retry from
 * WHMCS's module queue repeats exactly, and answer "success" only once Provisio confirmed.
 */

declare(strict_types=1);

namespace Provisio\Whmcs;

final class Bridge
{
    /** Provisio's own bound on one wait; longer waits are asked for in several turns. */
    private const MAX_WAIT = 300;
    /** How many failed jobs in a row one call looks past before it gives up (see action()). */
    private const MAX_CHAIN = 10;

    private Client $api;
    private int $wait;

    public function __construct(private readonly array $params, ?Client $api = null)
    {
        $this->wait = self::waitSeconds($params);
        $this->api = $api ?? Client::fromParams($params, $this->wait + 30);
    }

    public function api(): Client
    {
        return $this->api;
    }

    /** configoption2: how long a lifecycle call waits for Provisio's outcome (default 20 s). */
    public static function waitSeconds(array $params): int
    {
        $raw = trim((string)($params['configoption2'] ?? ''));
        if ($raw === '') {
            return 20;
        }
        if (!ctype_digit($raw) || (int)$raw > 3600) {
            throw new \InvalidArgumentException("Wait for outcome (seconds): '{$raw}' must be a whole number from 0 to 3600");
        }
        return (int)$raw;
    }

    /** configoption1: the Provisio product, by name. */
    public function productName(): string
    {
        $p = trim((string)($this->params['configoption1'] ?? ''));
        if ($p === '') {
            throw new \InvalidArgumentException('Provisio product: set the product name in the module settings');
        }
        return $p;
    }

    // ---- records -------------------------------------------------------------------

    /** The Provisio service whose external id is WHMCS's service id, or null. */
    public function findService(): ?array
    {
        $id = $this->serviceExternalId();
        try {
            return $this->api->request('GET', '/v1/services/by-external-id/' . rawurlencode($id))->body;
        } catch (ApiError $e) {
            if ($e->status === 404) {
                return null;
            }
            throw $e;
        }
    }

    public function requireService(): array
    {
        $s = $this->findService();
        if ($s === null) {
            throw new \RuntimeException('service ' . $this->serviceExternalId() . ' is not in Provisio: run Create first');
        }
        return $s;
    }

    /** The Provisio client whose external id is WHMCS's user id, made when missing. */
    public function ensureClient(): array
    {
        $ext = (string)($this->params['userid'] ?? '');
        if ($ext === '') {
            throw new \InvalidArgumentException('userid is missing from the call');
        }
        $path = '/v1/clients/by-external-id/' . rawurlencode($ext);
        try {
            return $this->api->request('GET', $path)->body ?? [];
        } catch (ApiError $e) {
            if ($e->status !== 404) {
                throw $e;
            }
        }
        $d = is_array($this->params['clientsdetails'] ?? null) ? $this->params['clientsdetails'] : [];
        $name = trim(($d['companyname'] ?? '') !== '' ? (string)$d['companyname'] : trim(($d['firstname'] ?? '') . ' ' . ($d['lastname'] ?? '')));
        $body = [
            'name' => $name !== '' ? $name : 'WHMCS client ' . $ext,
            'email' => (string)($d['email'] ?? ''),
            'external_id' => $ext,
        ];
        if (!empty($d['currency_code']) && preg_match('/^[A-Z]{3}$/', (string)$d['currency_code'])) {
            $body['currency'] = $d['currency_code'];
        }
        try {
            return $this->api->request('POST', '/v1/clients', null, $body, 'whmcs-client-' . $ext)->body ?? [];
        } catch (ApiError $e) {
            // Made meanwhile by another call for the same WHMCS client.
            if ($e->status === 409 && $e->rule() === 'unique' && $e->field() === 'external_id') {
                return $this->api->request('GET', $path)->body ?? [];
            }
            throw $e;
        }
    }

    public function serviceExternalId(): string
    {
        $id = (string)($this->params['serviceid'] ?? '');
        if ($id === '') {
            throw new \InvalidArgumentException('serviceid is missing from the call');
        }
        return $id;
    }

    /** Every job of a service, oldest first (one request unless it has over 1,000). */
    public function jobs(int $serviceId): array
    {
        $all = [];
        $cursor = null;
        do {
            $q = ['limit' => 1000] + ($cursor !== null ? ['cursor' => $cursor] : []);
            $page = $this->api->request('GET', "/v1/services/{$serviceId}/jobs", $q)->body ?? [];
            array_push($all, ...($page['items'] ?? []));
            $cursor = $page['next_cursor'] ?? null;
        } while ($cursor !== null);
        return $all;
    }

    // ---- actions -------------------------------------------------------------------

    /**
     * Orders the service (once: the order key repeats on a retry) and waits for its create.
     * Returns "success" or the message WHMCS shows.
     */
    public function create(): string
    {
        $client = $this->ensureClient();
        $order = [
            'client_id' => $client['id'],
            'product' => $this->productName(),
            'external_id' => $this->serviceExternalId(),
        ];
        $username = trim((string)($this->params['username'] ?? ''));
        if ($username !== '') {
            $order['username'] = $username;
        }
        $password = (string)($this->params['password'] ?? '');
        if ($password !== '') {
            $order['password'] = $password;
        }
        $key = $this->key('order', [$order['product'], $username, $password]);
        try {
            $placed = $this->api->request('POST', '/v1/services', null, $order, $key);
            $service = $placed->body ?? [];
        } catch (ApiError $e) {
            if ($e->status === 409 && $e->rule() === 'unique' && $e->field() === 'external_id') {
                // The service is in Provisio already but was not ordered by this call (made
                // before by hand, or terminated and now set up again): run create on it.
                return $this->action('create');
            }
            throw $e;
        }
        $job = null;
        foreach ($this->jobs((int)$service['id']) as $j) {
            if ($j['action'] === 'create') {
                $job = $j;
            }
        }
        if ($job === null) {
            // A product set up by hand in Provisio: the order waits; this call is the go-ahead.
            return $this->action('create');
        }
        if ($placed->replayed && in_array($job['state'], ['failed', 'resolved', 'cancelled'], true)) {
            // WHMCS was told of this failure before: this call is the retry.
            return $this->action('create');
        }
        return $this->outcome($job, (int)$service['id']);
    }

    /**
     * Runs a service action and waits for it. The idempotency key is the service, the
     * action, a keyed hash of what WHMCS asked (reason, password, product) and the last
     * job of another action before it: a retry of the same request finds the same job,
     * while the same action asked again after something else happened (suspend, unsuspend,
     * suspend) is a new request. A request whose job failed is asked once more under a key
     * naming that failed job, so WHMCS's "retry" after a failure really tries again.
     *
     * @param array<string,mixed>|null $body
     */
    public function action(string $action, ?array $body = null): string
    {
        $service = $this->requireService();
        $sid = (int)$service['id'];
        $snake = str_replace('-', '_', $action);
        $anchor = 0;
        foreach ($this->jobs($sid) as $j) {
            if ($j['action'] !== $snake) {
                $anchor = (int)$j['id'];
            }
        }
        $key = $this->key($snake, [json_encode($body ?? [])]) . '-a' . $anchor;
        for ($i = 0; $i < self::MAX_CHAIN; $i++) {
            $r = $this->send("/v1/services/{$sid}/" . rawurlencode($action), $body, $key);
            $job = $r->body ?? [];
            if ($r->replayed && in_array($job['state'] ?? '', ['failed', 'resolved', 'cancelled'], true)) {
                // The earlier call under this key was told of this failure: try again.
                $key .= '-f' . $job['id'];
                continue;
            }
            return $this->outcome($job, $sid);
        }
        return "Provisio: {$action} failed " . self::MAX_CHAIN . ' times in a row; see the service\'s jobs in Provisio';
    }

    /** Posts an action under its key; an in-progress 409 (a parallel retry) is waited out. */
    private function send(string $path, ?array $body, string $key): Response
    {
        $deadline = microtime(true) + max($this->wait, 1);
        while (true) {
            try {
                return $this->api->request('POST', $path, $this->wait > 0 ? ['wait' => min($this->wait, self::MAX_WAIT)] : null, $body, $key);
            } catch (ApiError $e) {
                if ($e->status === 409 && $e->rule() === 'in_progress' && microtime(true) < $deadline) {
                    usleep(250_000);
                    continue;
                }
                throw $e;
            }
        }
    }

    /** Waits (what is left of the configured time) for a job and says what WHMCS should hear. */
    public function outcome(array $job, int $serviceId): string
    {
        $deadline = microtime(true) + $this->wait;
        while (in_array($job['state'] ?? '', ['pending', 'running'], true)) {
            $left = (int)ceil($deadline - microtime(true));
            if ($left <= 0) {
                break;
            }
            $job = $this->api->request('GET', '/v1/jobs/' . (int)$job['id'], ['wait' => min($left, self::MAX_WAIT)])->body ?? [];
        }
        $state = $job['state'] ?? '';
        $id = (int)($job['id'] ?? 0);
        if ($state === 'done') {
            if (($job['action'] ?? '') === 'create') {
                $this->keepOutputs($serviceId);
            }
            return 'success';
        }
        if ($state === 'pending' || $state === 'running') {
            return "queued in Provisio as job {$id}, still running";
        }
        $why = $job['last_error'] ?? $job['note'] ?? $state;
        return "Provisio job {$id} {$state}: {$why}";
    }

    /**
     * configoption3: lines `output=WHMCS custom field`; the module's outputs of the created
     * service (a pass key, say) are written to those fields through the custom field seam.
     */
    private function keepOutputs(int $serviceId): void
    {
        $map = self::outputMap($this->params);
        $service = $this->api->request('GET', "/v1/services/{$serviceId}")->body ?? [];
        $username = (string)($service['username'] ?? '');
        if ($username !== '' && $username !== (string)($this->params['username'] ?? '')) {
            // Provisio chose the username: WHMCS shows and mails the one in use.
            \provisio_whmcs_update_hosting((int)$this->params['serviceid'], ['username' => $username]);
        }
        foreach ($map as $output => $field) {
            $value = $service['outputs'][$output] ?? null;
            if ($value === null) {
                continue;
            }
            \provisio_whmcs_save_custom_field($this->params, $field, is_scalar($value) ? (string)$value : json_encode($value));
        }
    }

    /** @return array<string,string> output name => custom field name */
    public static function outputMap(array $params): array
    {
        $map = [];
        foreach (preg_split('/\R/', (string)($params['configoption3'] ?? '')) as $line) {
            $line = trim($line);
            if ($line === '' || !str_contains($line, '=')) {
                continue;
            }
            [$out, $field] = array_map('trim', explode('=', $line, 2));
            if ($out !== '' && $field !== '') {
                $map[$out] = $field;
            }
        }
        return $map;
    }

    /** WHMCS's suspension reason as Provisio's: overdue invoices are `non-payment`. */
    public static function suspendReason(array $params): string
    {
        $r = trim(preg_replace('/[\x00-\x1f\x7f]+/', ' ', (string)($params['suspendreason'] ?? '')));
        if ($r === '') {
            return 'admin';
        }
        // WHMCS's cron suspends with "Overdue on Payment"; staff may type anything else.
        if (preg_match('/overdue|non[- ]?payment|unpaid/i', $r) === 1) {
            return 'non-payment';
        }
        foreach (['abuse', 'holiday'] as $known) {
            if (strcasecmp($r, $known) === 0) {
                return $known;
            }
        }
        // Provisio takes up to 200 characters; cut on a character, not a byte (no mbstring needed).
        return implode('', array_slice(preg_split('//u', $r, -1, PREG_SPLIT_NO_EMPTY) ?: [], 0, 200));
    }

    /**
     * An idempotency key: WHMCS's service id, the action, and an HMAC (under the API key,
     * so that a key never shows what a password was) of what this request asks.
     *
     * @param list<string> $parts
     */
    private function key(string $action, array $parts): string
    {
        $secret = (string)($this->params['serveraccesshash'] ?? '');
        $mac = substr(hash_hmac('sha256', implode("\0", $parts), $secret), 0, 20);
        return 'whmcs-' . $this->serviceExternalId() . '-' . $action . '-' . $mac;
    }

    // ---- reads ---------------------------------------------------------------------

    /** Provisio's console, where staff sign in with their own key: WHMCS's server-level login. */
    public function consoleUrl(): string
    {
        return rtrim($this->api->baseUrl(), '/') . '/console';
    }

    /** Provisio's login link for the service. */
    public function loginUrl(): string
    {
        $s = $this->requireService();
        $r = $this->api->request('POST', '/v1/services/' . (int)$s['id'] . '/login-url', null, new \stdClass());
        return (string)($r->body['url'] ?? '');
    }

    /** @return list<string> the custom actions the service's server offers */
    public function customActions(): array
    {
        $s = $this->findService();
        if ($s === null) {
            return [];
        }
        $r = $this->api->request('GET', '/v1/services/' . (int)$s['id'] . '/actions');
        return array_values(array_filter($r->body['custom'] ?? [], 'is_string'));
    }

    /**
     * Usage of every service this key sees, a page of 1,000 per request, written to
     * tblhosting through the hosting seam for those that are WHMCS services of this server.
     *
     * @return int how many services were updated
     */
    public function usageUpdate(): int
    {
        $serverId = isset($this->params['serverid']) ? (int)$this->params['serverid'] : null;
        $now = date('Y-m-d H:i:s');
        $updated = 0;
        $cursor = null;
        do {
            $q = ['limit' => 1000] + ($cursor !== null ? ['cursor' => $cursor] : []);
            $page = $this->api->request('GET', '/v1/usage/services', $q)->body ?? [];
            foreach ($page['items'] ?? [] as $line) {
                $ext = $line['external_id'] ?? null;
                if (!is_string($ext) || !ctype_digit($ext)) {
                    continue;
                }
                $fields = self::usageFields($line['metrics'] ?? []);
                if ($fields === []) {
                    continue;
                }
                $fields['lastupdate'] = $now;
                \provisio_whmcs_update_hosting((int)$ext, $fields, $serverId);
                $updated++;
            }
            $cursor = $page['next_cursor'] ?? null;
        } while ($cursor !== null);
        return $updated;
    }

    /** Metric names read as disk and as bandwidth, first match wins. */
    public const DISK_METRICS = ['disk', 'storage', 'disk_mb', 'quota'];
    public const BANDWIDTH_METRICS = ['bandwidth', 'bw', 'traffic', 'data', 'transfer'];

    /**
     * Provisio's metrics as tblhosting's columns, in MB as WHMCS shows them.
     *
     * @param list<array<string,mixed>> $metrics
     * @return array<string,int|float>
     */
    public static function usageFields(array $metrics): array
    {
        $by = [];
        foreach ($metrics as $m) {
            if (isset($m['metric'])) {
                $by[$m['metric']] = $m;
            }
        }
        $out = [];
        foreach ([['diskusage', 'disklimit', self::DISK_METRICS], ['bwusage', 'bwlimit', self::BANDWIDTH_METRICS]] as [$used, $limit, $names]) {
            foreach ($names as $n) {
                if (!isset($by[$n])) {
                    continue;
                }
                $m = $by[$n];
                $f = self::toMb($m['unit'] ?? null);
                $out[$used] = round((float)$m['used'] * $f, 2);
                // WHMCS reads a limit of 0 as unlimited.
                $out[$limit] = isset($m['limit']) ? round((float)$m['limit'] * $f, 2) : 0;
                break;
            }
        }
        return $out;
    }

    private static function toMb(?string $unit): float
    {
        return match (strtolower(trim((string)$unit))) {
            'b', 'byte', 'bytes' => 1 / 1048576,
            'kb', 'kib' => 1 / 1024,
            'gb', 'gib' => 1024,
            'tb', 'tib' => 1048576,
            default => 1, // MB, or no unit: taken as WHMCS's own unit
        };
    }

    /** Page size of the audits' list ListAccounts follows (a test pages by one). */
    public static int $auditPageSize = 1000;

    /**
     * What WHMCS's server sync reads as the server's accounts: Provisio's records of this key
     * (through `collect`, so that each carries its product's name, matched against
     * configoption1), each with the drift the last finished audit of its server found, and
     * the accounts those audits found on the remotes with no Provisio record (orphans).
     */
    public function listAccounts(): array
    {
        $audits = $this->lastAudits();
        $drift = [];
        $orphans = [];
        foreach ($audits as $audit) {
            $findings = $this->api->request('GET', '/v1/audits/' . (int)$audit['id'] . '/findings')->body ?? [];
            foreach ($findings as $f) {
                if (($f['kind'] ?? '') === 'orphan_remote') {
                    $orphans[] = [$audit, $f];
                } elseif (isset($f['service_id'])) {
                    $drift[(int)$f['service_id']][] = self::driftOf($f);
                }
            }
        }
        $fields = ['service.username', 'service.status', 'service.external_id', 'service.created_at',
            'service.server_id', 'service.settings.domain', 'product.name', 'client.email'];
        $accounts = [];
        $known = [];
        $cursor = null;
        do {
            $q = ['limit' => 1000] + ($cursor !== null ? ['cursor' => $cursor] : []);
            $page = $this->api->request('POST', '/v1/collect', $q, ['fields' => $fields])->body ?? [];
            foreach ($page['items'] ?? [] as $item) {
                $v = $item['values'] ?? [];
                $s = $v['service'] ?? [];
                $created = strtotime((string)($s['created_at'] ?? ''));
                $username = (string)($s['username'] ?? '');
                $known[($s['server_id'] ?? '') . '/' . $username] = true;
                $accounts[] = [
                    'email' => (string)($v['client']['email'] ?? ''),
                    'username' => $username,
                    'domain' => is_string($s['settings']['domain'] ?? null) ? $s['settings']['domain'] : '',
                    'uniqueIdentifier' => $username,
                    'product' => (string)($v['product']['name'] ?? ''),
                    'primaryip' => '',
                    'created' => $created ? date('Y-m-d H:i:s', $created) : '',
                    'status' => match ($s['status'] ?? '') {
                        'active' => 'Active',
                        'suspended' => 'Suspended',
                        'terminated' => 'Terminated',
                        default => 'Pending',
                    },
                    'provisio_service_id' => $item['service_id'],
                    'whmcs_service_id' => $s['external_id'] ?? null,
                    'provisio_drift' => $drift[(int)$item['service_id']] ?? [],
                ];
            }
            $cursor = $page['next_cursor'] ?? null;
        } while ($cursor !== null);
        foreach ($orphans as [$audit, $f]) {
            $username = (string)($f['username'] ?? '');
            if (isset($known[$audit['server_id'] . '/' . $username])) {
                // Imported into Provisio since that audit (`fix: local`): listed above.
                continue;
            }
            $accounts[] = [
                'email' => '',
                'username' => $username,
                'domain' => '',
                'uniqueIdentifier' => $username,
                // The remote's package: no Provisio product stands for it yet.
                'product' => (string)($f['remote_package'] ?? ''),
                'primaryip' => '',
                'created' => '',
                'status' => self::remoteStatus($f['remote_status'] ?? null),
                'provisio_service_id' => null,
                'whmcs_service_id' => null,
                'provisio_drift' => [self::driftOf($f)],
                'provisio_audit_id' => (int)$audit['id'],
            ];
        }
        return $accounts;
    }

    /**
     * The last finished (`done`) audit of each server, from the audits' list (oldest first),
     * followed page by page.
     *
     * @return array<int,array<string,mixed>> server id => audit
     */
    public function lastAudits(): array
    {
        $last = [];
        $cursor = null;
        do {
            $q = ['limit' => self::$auditPageSize] + ($cursor !== null ? ['cursor' => $cursor] : []);
            $page = $this->api->request('GET', '/v1/audits', $q)->body ?? [];
            foreach ($page['items'] ?? [] as $a) {
                if (($a['state'] ?? '') === 'done') {
                    $last[(int)$a['server_id']] = $a;
                }
            }
            $cursor = $page['next_cursor'] ?? null;
        } while ($cursor !== null);
        return $last;
    }

    /** A finding as ListAccounts shows it on an account. */
    private static function driftOf(array $f): array
    {
        $kind = (string)($f['kind'] ?? '');
        $what = $kind === 'package_mismatch' ? 'package' : 'status';
        return [
            'kind' => $kind,
            'provisio' => $f["local_{$what}"] ?? null,
            'remote' => $f["remote_{$what}"] ?? null,
        ];
    }

    /** A remote's status word as WHMCS's (the words Provisio's audit reads the same way). */
    private static function remoteStatus(?string $s): string
    {
        return match (strtolower(trim((string)$s))) {
            'suspended', 'disabled', 'false', 'inactive' => 'Suspended',
            'terminated', 'deleted' => 'Terminated',
            // The remote holds the account: whatever it calls the state, it exists.
            default => 'Active',
        };
    }
}
