<?php
/**
 * The Provisio REST client of the WHMCS module: one authenticated JSON request at a time,
 * problem+json answers turned into ApiError, and a trace of what was sent for logModuleCall.
 */

declare(strict_types=1);

namespace Provisio\Whmcs;

/** A refused or failed call to Provisio, with the problem document when it sent one. */
final class ApiError extends \RuntimeException
{
    /** @param array<string,mixed>|null $problem */
    public function __construct(string $message, public readonly int $status, public readonly ?array $problem = null)
    {
        parent::__construct($message);
    }

    /** The field of the first field error (e.g. `external_id`, `username`), if any. */
    public function field(): ?string
    {
        $errors = $this->problem['errors'] ?? null;
        if (is_array($errors) && isset($errors[0]['field']) && is_string($errors[0]['field'])) {
            return $errors[0]['field'];
        }
        return null;
    }

    /** The rule of the first field error (e.g. `unique`, `in_progress`), if any. */
    public function rule(): ?string
    {
        $errors = $this->problem['errors'] ?? null;
        if (is_array($errors) && isset($errors[0]['rule']) && is_string($errors[0]['rule'])) {
            return $errors[0]['rule'];
        }
        return null;
    }
}

/** One answer: status, parsed JSON body, and whether it was an idempotent replay. */
final class Response
{
    /** @param array<string,mixed>|null $body */
    public function __construct(public readonly int $status, public readonly ?array $body, public readonly bool $replayed)
    {
    }
}

final class Client
{
    /** Every request this process sent, across clients: the harness counts them. */
    public static int $sent = 0;

    /** @var list<array<string,mixed>> what this client sent and got, for logModuleCall */
    private array $trace = [];

    public function __construct(
        private readonly string $baseUrl,
        #[\SensitiveParameter] private readonly string $apiKey,
        private readonly int $timeout = 30,
    ) {
        if (!function_exists('curl_init')) {
            throw new \RuntimeException('the PHP curl extension is required (php-curl)');
        }
    }

    /** The server record's fields as WHMCS passes them, made into a client. */
    public static function fromParams(array $params, int $timeout = 30): self
    {
        $host = trim((string)($params['serverhostname'] ?? ''));
        if ($host === '') {
            $host = trim((string)($params['serverip'] ?? ''));
        }
        if ($host === '') {
            throw new \InvalidArgumentException('the server has no hostname: set Hostname to the Provisio address');
        }
        $key = trim((string)($params['serveraccesshash'] ?? ''));
        if ($key === '') {
            throw new \InvalidArgumentException('the server has no Access Hash: paste a Provisio key of role billing there');
        }
        if (preg_match('#^https?://#i', $host) === 1) {
            // An address with a scheme (and maybe a path prefix behind a proxy) is taken as it is.
            $base = rtrim($host, '/');
        } else {
            $secure = self::isOn($params['serversecure'] ?? false);
            $port = trim((string)($params['serverport'] ?? ''));
            $base = ($secure ? 'https://' : 'http://') . $host . ($port !== '' ? ':' . $port : '');
        }
        return new self($base, $key, $timeout);
    }

    public static function isOn(mixed $v): bool
    {
        return $v === true || $v === 1 || in_array(strtolower((string)$v), ['on', '1', 'yes', 'true'], true);
    }

    public function baseUrl(): string
    {
        return $this->baseUrl;
    }

    /** @return list<array<string,mixed>> */
    public function trace(): array
    {
        return $this->trace;
    }

    /**
     * Sends one request. 2xx answers come back; everything else is an ApiError whose
     * message is Provisio's own (it never holds a secret: Provisio redacts them).
     *
     * @param array<string,scalar>|null $query
     */
    public function request(string $method, string $path, ?array $query = null, mixed $body = null, ?string $idempotencyKey = null, ?int $timeout = null): Response
    {
        $url = $this->baseUrl . $path;
        if ($query) {
            $url .= '?' . http_build_query($query);
        }
        $headers = ['Accept: application/json', 'Authorization: Bearer ' . $this->apiKey];
        if ($idempotencyKey !== null) {
            $headers[] = 'Idempotency-Key: ' . $idempotencyKey;
        }
        $payload = null;
        if ($body !== null) {
            $payload = json_encode($body, JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR);
            $headers[] = 'Content-Type: application/json';
        }
        $replayed = false;
        $ch = curl_init($url);
        curl_setopt_array($ch, [
            CURLOPT_CUSTOMREQUEST => $method,
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_HTTPHEADER => $headers,
            CURLOPT_CONNECTTIMEOUT => 10,
            CURLOPT_TIMEOUT => $timeout ?? $this->timeout,
            CURLOPT_FOLLOWLOCATION => false,
            CURLOPT_HEADERFUNCTION => static function ($ch, string $line) use (&$replayed): int {
                if (stripos($line, 'idempotent-replayed:') === 0 && stripos($line, 'true') !== false) {
                    $replayed = true;
                }
                return strlen($line);
            },
        ]);
        if ($payload !== null) {
            curl_setopt($ch, CURLOPT_POSTFIELDS, $payload);
        }
        self::$sent++;
        $raw = curl_exec($ch);
        $status = (int)curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
        $err = curl_error($ch);
        curl_close($ch);
        $entry = ['method' => $method, 'path' => $path, 'query' => $query, 'body' => $body];
        if ($idempotencyKey !== null) {
            $entry['idempotency_key'] = $idempotencyKey;
        }
        if ($raw === false) {
            $entry['error'] = $err;
            $this->trace[] = $entry;
            throw new ApiError("Provisio at {$this->baseUrl} did not answer: {$err}", 0);
        }
        $decoded = $raw === '' ? null : json_decode((string)$raw, true);
        $entry['status'] = $status;
        $entry['answer'] = $decoded;
        $this->trace[] = $entry;
        if ($status >= 200 && $status < 300) {
            return new Response($status, is_array($decoded) ? $decoded : null, $replayed);
        }
        $problem = is_array($decoded) ? $decoded : null;
        $detail = $problem['detail'] ?? $problem['title'] ?? ('HTTP ' . $status);
        $fields = [];
        foreach (($problem['errors'] ?? []) as $e) {
            if (is_array($e)) {
                $fields[] = trim(($e['field'] ?? '') . ': ' . ($e['message'] ?? $e['rule'] ?? ''));
            }
        }
        $message = 'Provisio answered ' . $status . ': ' . $detail . ($fields ? ' (' . implode('; ', $fields) . ')' : '');
        throw new ApiError($message, $status, $problem);
    }
}
