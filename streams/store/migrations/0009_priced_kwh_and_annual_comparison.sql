-- Intensity is grams over the energy those grams priced. effective_g_per_kwh divided the
-- priced grams by all energy, unpriced hours included (a day's zone intensity showed 166.8
-- g/kWh against a true 340-382). Now: priced_kwh (energy x the priced fraction) and
-- unpriced_kwh beside energy_kwh, and effective_g_per_kwh = emissions_g / priced_kwh.

CREATE OR REPLACE VIEW $database.emissions_by_zone_hourly AS
SELECT *, if(priced_kwh > 0, emissions_g / priced_kwh, NULL) AS effective_g_per_kwh
FROM (
    SELECT hour_start, zone, site,
           sum(energy_kwh) AS energy_kwh,
           sum(e.energy_kwh * ifNull(e.priced_fraction_average, 0)) AS priced_kwh,
           sum(e.energy_kwh * (1 - ifNull(e.priced_fraction_average, 0))) AS unpriced_kwh,
           sum(facility_energy_kwh) AS facility_energy_kwh,
           sum(emissions_average_g) AS emissions_g,
           sum(emissions_marginal_g) AS emissions_marginal_g,
           sum(embodied_g) AS embodied_g, sum(water_l) AS water_l, sum(coverage) AS gpu_hours
    FROM $database.emissions AS e GROUP BY hour_start, zone, site
);

CREATE OR REPLACE VIEW $database.emissions_by_zone_daily AS
SELECT *, if(priced_kwh > 0, emissions_g / priced_kwh, NULL) AS effective_g_per_kwh
FROM (
    SELECT toDate(hour_start) AS day, zone, site,
           sum(energy_kwh) AS energy_kwh, sum(priced_kwh) AS priced_kwh,
           sum(unpriced_kwh) AS unpriced_kwh, sum(facility_energy_kwh) AS facility_energy_kwh,
           sum(emissions_g) AS emissions_g, sum(emissions_marginal_g) AS emissions_marginal_g,
           sum(embodied_g) AS embodied_g, sum(water_l) AS water_l, sum(gpu_hours) AS gpu_hours
    FROM $database.emissions_by_zone_hourly GROUP BY day, zone, site
);

-- The annual-average method, the one most tools use: each zone's time-weighted mean of the
-- newest revision of its average-signal periods over a calendar year, per variant, from
-- the intensity the pipeline received (a replayed year's file gives that file's mean).
-- Fills (provider fill:...) are estimates, not data, and are left out.
CREATE VIEW IF NOT EXISTS $database.annual_mean_intensity AS
SELECT zone, variant, toYear(period_start) AS year,
       sum(intensity_g_per_kwh * seconds) / sum(seconds) AS mean_g_per_kwh,
       sum(seconds) / 3600 AS hours
FROM (
    SELECT zone, variant, period_start,
           avg(g.intensity_g_per_kwh) AS intensity_g_per_kwh,
           max(toUnixTimestamp64Milli(g.period_end) - toUnixTimestamp64Milli(g.period_start))
               / 1000 AS seconds
    FROM $database.grid_intensity_current AS g
    WHERE signal = 'average' AND NOT startsWith(provider, 'fill:')
    GROUP BY zone, variant, period_start
)
GROUP BY zone, variant, year;

-- Hourly matching against the annual average, per day, zone, tenant and job: the grams
-- the pipeline computed hour by hour, and what the zone's annual mean would have said for
-- the same priced energy. difference_pct > 0: the annual average overstates the job.
CREATE VIEW IF NOT EXISTS $database.hourly_vs_annual_daily AS
SELECT e.day AS day, e.zone AS zone, e.tenant AS tenant, e.job_id AS job_id,
       e.variant AS variant, e.priced_kwh AS priced_kwh, e.hourly_g AS hourly_g,
       a.mean_g_per_kwh AS annual_mean_g_per_kwh,
       e.priced_kwh * a.mean_g_per_kwh AS annual_g,
       e.priced_kwh * a.mean_g_per_kwh - e.hourly_g AS difference_g,
       if(e.hourly_g > 0, 100 * (e.priced_kwh * a.mean_g_per_kwh - e.hourly_g) / e.hourly_g,
          NULL) AS difference_pct
FROM (
    SELECT toDate(hour_start) AS day, toYear(hour_start) AS year, zone, tenant, job_id,
           assumeNotNull(variant_average) AS variant,
           sum(x.energy_kwh * ifNull(x.priced_fraction_average, 0)) AS priced_kwh,
           sum(ifNull(x.emissions_average_g, 0)) AS hourly_g
    FROM $database.emissions AS x
    WHERE x.variant_average IS NOT NULL
    GROUP BY day, year, zone, tenant, job_id, variant
) AS e
INNER JOIN $database.annual_mean_intensity AS a
    ON a.zone = e.zone AND a.variant = e.variant AND a.year = e.year;
