<?php
/**
 * The seams between the module and WHMCS's own tables: writing a service's usage and
 * username (tblhosting) and a custom field value. WHMCS offers no module API for these, so
 * in WHMCS they are written with WHMCS's database layer (Capsule); a test harness that
 * stands in for WHMCS defines these functions itself before it loads the module.
 */

declare(strict_types=1);

use WHMCS\Database\Capsule;

if (!function_exists('provisio_whmcs_update_hosting')) {
    /**
     * Sets columns of a service's tblhosting row (diskusage, disklimit, bwusage, bwlimit,
     * lastupdate, username); with $serverId only if the service is on that server.
     *
     * @param array<string,scalar> $fields
     */
    function provisio_whmcs_update_hosting(int $serviceId, array $fields, ?int $serverId = null): void
    {
        $q = Capsule::table('tblhosting')->where('id', $serviceId);
        if ($serverId !== null) {
            $q->where('server', $serverId);
        }
        $q->update($fields);
    }
}

if (!function_exists('provisio_whmcs_save_custom_field')) {
    /**
     * Writes a custom field named $fieldName: the product's custom field of the service if
     * the product has one by that name, else the client's custom field (as seed 002's
     * "Pass Key" is). Returns false when neither exists.
     */
    function provisio_whmcs_save_custom_field(array $params, string $fieldName, string $value): bool
    {
        $serviceId = (int)$params['serviceid'];
        $packageId = (int)($params['pid'] ?? $params['packageid'] ?? 0);
        $targets = [['product', $packageId, $serviceId], ['client', 0, (int)$params['userid']]];
        foreach ($targets as [$type, $relid, $owner]) {
            $q = Capsule::table('tblcustomfields')->where('type', $type)->where('fieldname', $fieldName);
            if ($type === 'product') {
                $q->where('relid', $relid);
            }
            $field = $q->first();
            if ($field === null) {
                continue;
            }
            Capsule::table('tblcustomfieldsvalues')->updateOrInsert(
                ['fieldid' => $field->id, 'relid' => $owner],
                ['value' => $value],
            );
            return true;
        }
        return false;
    }
}
