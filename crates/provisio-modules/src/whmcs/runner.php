<?php
// Provisio's stand-in for the part of WHMCS a self-contained server module uses. It reads
// one JSON request on stdin, loads the module file, calls one function (or describes the
// module) and writes one JSON reply on stdout. Whatever the module prints is kept out of
// the reply, so a stray echo cannot be mistaken for an answer.
// Rust builds `$params` (crates/provisio-modules/src/whmcs/params.rs); this file only
// supplies the functions and constants a module calls and carries values back.

define('WHMCS', true);
define('ROOTDIR', getcwd());
ini_set('display_errors', 'stderr');
ini_set('log_errors', '0');
error_reporting(E_ALL);

// Modules' `_ListAccounts` name statuses by WHMCS's constants.
eval('namespace WHMCS\Service; class Status { const PENDING = "Pending"; const ACTIVE = "Active"; const SUSPENDED = "Suspended"; const TERMINATED = "Terminated"; const CANCELLED = "Cancelled"; const FRAUD = "Fraud"; const COMPLETED = "Completed"; }');

$GLOBALS['__provisio'] = ['logs' => [], 'outputs' => [], 'replied' => false];

/** WHMCS's module log: the entry is kept with every value of $replaceVars scrubbed. */
function logModuleCall($module, $action, $requestString, $responseData, $processedData = '', $replaceVars = [])
{
    $text = function ($v) {
        if (is_string($v)) {
            return $v;
        }
        $json = json_encode($v, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE | JSON_PARTIAL_OUTPUT_ON_ERROR);
        return $json === false ? print_r($v, true) : $json;
    };
    $scrub = function ($s) use ($replaceVars) {
        foreach ((array) $replaceVars as $secret) {
            $secret = (string) $secret;
            if ($secret !== '') {
                $s = str_replace($secret, str_repeat('*', 8), $s);
            }
        }
        return $s;
    };
    if (count($GLOBALS['__provisio']['logs']) < 100) {
        $GLOBALS['__provisio']['logs'][] = [
            'module' => $scrub($text($module)),
            'action' => $scrub($text($action)),
            'request' => $scrub($text($requestString)),
            'response' => $scrub($text($responseData)),
            'processed' => $scrub($text($processedData)),
        ];
    }
}

/**
 * Provisio's way back for values a module would write into WHMCS itself: the value becomes
 * the module output named after the field ("Pass Key" -> pass_key), which the product's
 * `client_fields` can copy into a client custom field.
 */
function provisio_set_custom_field($field, $value)
{
    $name = strtolower(trim(preg_replace('/[^A-Za-z0-9]+/', '_', (string) $field), '_'));
    if ($name === '' || !ctype_alpha($name[0])) {
        throw new InvalidArgumentException("custom field name '$field' has no letters to name an output");
    }
    $GLOBALS['__provisio']['outputs'][$name] = (string) $value;
}

function __provisio_reply(array $reply, int $code = 0)
{
    if ($GLOBALS['__provisio']['replied']) {
        return;
    }
    $GLOBALS['__provisio']['replied'] = true;
    $printed = '';
    while (ob_get_level() > 0) {
        $printed .= (string) ob_get_clean();
    }
    $reply['logs'] = $GLOBALS['__provisio']['logs'];
    $reply['outputs'] = (object) $GLOBALS['__provisio']['outputs'];
    $reply['printed'] = substr($printed, 0, 2000);
    fwrite(STDOUT, json_encode($reply, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE | JSON_PARTIAL_OUTPUT_ON_ERROR) . "\n");
    exit($code);
}

// A fatal error (an undefined WHMCS function or class, a syntax error) ends the script
// without a return value; this still answers, saying what stopped it.
register_shutdown_function(function () {
    if ($GLOBALS['__provisio']['replied']) {
        return;
    }
    $e = error_get_last();
    $why = $e ? sprintf('%s in %s line %d', $e['message'], basename($e['file']), $e['line']) : 'the module exited without an answer';
    __provisio_reply(['fatal' => $why], 1);
});

$request = json_decode(stream_get_contents(STDIN), true);
if (!is_array($request) || !isset($request['file'], $request['module'])) {
    fwrite(STDERR, "the runner's request is not valid JSON with `file` and `module`\n");
    exit(2);
}
$module = $request['module'];
ob_start();
try {
    require $request['file'];
} catch (Throwable $e) {
    __provisio_reply(['threw' => get_class($e) . ': ' . $e->getMessage()], 1);
}

if (!empty($request['describe'])) {
    $call = function ($suffix, $arg) use ($module) {
        $f = $module . '_' . $suffix;
        return function_exists($f) ? $f($arg) : null;
    };
    try {
        $functions = [];
        foreach ($request['describe'] as $suffix) {
            if (function_exists($module . '_' . $suffix)) {
                $functions[] = $suffix;
            }
        }
        __provisio_reply([
            'functions' => $functions,
            'metadata' => $call('MetaData', null),
            'config_options' => $call('ConfigOptions', []),
            'admin_buttons' => $call('AdminCustomButtonArray', []),
            'client_buttons' => $call('ClientAreaCustomButtonArray', []),
        ]);
    } catch (Throwable $e) {
        __provisio_reply(['threw' => get_class($e) . ': ' . $e->getMessage()], 1);
    }
}

$function = $module . '_' . $request['function'];
if (!function_exists($function)) {
    __provisio_reply(['missing' => $function], 1);
}
try {
    $result = $function($request['params']);
} catch (Throwable $e) {
    __provisio_reply(['threw' => get_class($e) . ': ' . $e->getMessage()], 1);
}
__provisio_reply(['result' => $result]);
