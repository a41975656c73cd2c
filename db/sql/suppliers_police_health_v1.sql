-- Police stop and search, police.uk outcomes, London Ambulance Service assault call-outs and hospital
-- emergency department (ISTV) assaults: their supplier rows, the new 'police_activity' domain, the health
-- (70-89) and police activity (90-99) categories, and each supplier's mapping onto them.
-- Seeded by migration 0006; its downgrade deletes exactly these rows again.

INSERT INTO suppliers (code, name, access_level, time_precision, expected_cadence, licence, attribution) VALUES
    ('police_uk_stop_search', 'Police stop and search (police.uk stop-and-search files)', 10, 'minute', '1 month',
     'Open Government Licence v3.0',
     'Contains public sector information licensed under the Open Government Licence v3.0. (data.police.uk, Home Office)'),
    ('police_uk_outcomes', 'Police outcomes of recorded crimes (police.uk outcomes files)', 10, 'month', '1 month',
     'Open Government Licence v3.0',
     'Contains public sector information licensed under the Open Government Licence v3.0. (data.police.uk, Home Office)'),
    ('las', 'London Ambulance Service assault call-outs (record level)', 20, 'minute', '1 month',
     'Data sharing agreement with the London Ambulance Service NHS Trust (not open data)',
     'London Ambulance Service NHS Trust'),
    ('istv_ed', 'Hospital emergency department assaults (ISTV minimum data set)', 20, 'minute', '1 month',
     'Data sharing agreement with each NHS trust under the ISTV information standard (not open data)',
     'NHS emergency departments, Information Sharing to Tackle Violence (ISTV) minimum data set');

INSERT INTO domains (code, name, sort_order) VALUES
    ('police_activity', 'Police activity (stop and search)', 6);

INSERT INTO categories (id, domain, code, name) VALUES
    (70, 'health', 'health_assault',           'Assault (no weapon recorded)'),
    (71, 'health', 'health_stabbing',          'Stabbing or sharp-object assault'),
    (72, 'health', 'health_shooting',          'Shooting'),
    (73, 'health', 'health_blunt_object',      'Assault with a blunt object'),
    (74, 'health', 'health_glass_bottle',      'Assault with glass or a bottle'),
    (75, 'health', 'health_corrosive',         'Corrosive substance attack'),
    (76, 'health', 'health_sexual_assault',    'Sexual assault'),
    (79, 'health', 'health_assault_other',     'Assault, other or unknown method'),
    (90, 'police_activity', 'stop_search_drugs',          'Stop and search: controlled drugs'),
    (91, 'police_activity', 'stop_search_weapons',        'Stop and search: offensive weapons'),
    (92, 'police_activity', 'stop_search_firearms',       'Stop and search: firearms'),
    (93, 'police_activity', 'stop_search_stolen_goods',   'Stop and search: stolen goods'),
    (94, 'police_activity', 'stop_search_criminal_damage', 'Stop and search: articles for criminal damage'),
    (95, 'police_activity', 'stop_search_section_60',     'Stop and search: anything to threaten or harm (s60)'),
    (96, 'police_activity', 'stop_search_evidence',       'Stop and search: evidence of offences'),
    (97, 'police_activity', 'stop_search_fireworks',      'Stop and search: fireworks'),
    (98, 'police_activity', 'stop_search_other',          'Stop and search: other object'),
    (99, 'police_activity', 'stop_search_not_recorded',   'Stop and search: object not recorded');

-- Theme columns as in taxonomy_v1.sql: TRUE = every record of the category has the theme, FALSE = none has
-- it, NULL = the supplier's data cannot tell. Stop and search: the subjects are not victims (young victim
-- stays NULL); weapon is TRUE for searches whose object is a weapon (a search *for* a weapon, not one found:
-- police.uk's "Outcome linked to object of search" is blank in the Met's files).
INSERT INTO supplier_category_map
    (supplier, supplier_category, category_id, theme_weapon, theme_dava, theme_young_victim, theme_arson) VALUES
    ('police_uk_stop_search', 'Controlled drugs',                           90, NULL, NULL, NULL, NULL),
    ('police_uk_stop_search', 'Psychoactive substances',                    90, NULL, NULL, NULL, NULL),
    ('police_uk_stop_search', 'Offensive weapons',                          91, TRUE, NULL, NULL, NULL),
    ('police_uk_stop_search', 'Firearms',                                   92, TRUE, NULL, NULL, NULL),
    ('police_uk_stop_search', 'Stolen goods',                               93, NULL, NULL, NULL, NULL),
    ('police_uk_stop_search', 'Articles for use in criminal damage',        94, NULL, NULL, NULL, NULL),
    ('police_uk_stop_search', 'Anything to threaten or harm anyone',        95, TRUE, NULL, NULL, NULL),
    ('police_uk_stop_search', 'Evidence of offences under the Act',         96, NULL, NULL, NULL, NULL),
    ('police_uk_stop_search', 'Evidence of wildlife offences',              96, NULL, NULL, NULL, NULL),
    ('police_uk_stop_search', 'Fireworks',                                  97, NULL, NULL, NULL, NULL),
    ('police_uk_stop_search', 'Article for use in theft',                   98, NULL, NULL, NULL, NULL),
    ('police_uk_stop_search', 'Articles for use in theft',                  98, NULL, NULL, NULL, NULL),
    ('police_uk_stop_search', 'Goods on which duty has not been paid etc.', 98, NULL, NULL, NULL, NULL),
    ('police_uk_stop_search', 'Game or poaching equipment',                 98, NULL, NULL, NULL, NULL),
    ('police_uk_stop_search', 'Seals or hunting equipment',                 98, NULL, NULL, NULL, NULL),
    ('police_uk_stop_search', 'Crossbows',                                  98, TRUE, NULL, NULL, NULL),
    ('police_uk_stop_search', 'Detailed object of search unavailable',      99, NULL, NULL, NULL, NULL),
    ('police_uk_stop_search', '',                                           99, NULL, NULL, NULL, NULL),
    -- LAS call categories (docs/suppliers/las_assaults.md).
    ('las', 'Assault',                    70, NULL, NULL, NULL, FALSE),
    ('las', 'Stabbing',                   71, TRUE, NULL, NULL, FALSE),
    ('las', 'Shooting',                   72, TRUE, NULL, NULL, FALSE),
    ('las', 'Assault with weapon',        73, TRUE, NULL, NULL, FALSE),
    ('las', 'Corrosive substance attack', 75, TRUE, NULL, NULL, FALSE),
    ('las', 'Sexual assault',             76, NULL, NULL, NULL, FALSE),
    -- ISTV ASSAULT METHOD codes (docs/suppliers/istv_ed.md).
    ('istv_ed', '01', 70, FALSE, NULL, NULL, FALSE),   -- body part (punch, kick, head-butt)
    ('istv_ed', '02', 73, TRUE,  NULL, NULL, FALSE),   -- blunt object
    ('istv_ed', '03', 71, TRUE,  NULL, NULL, FALSE),   -- knife or other sharp object
    ('istv_ed', '04', 74, TRUE,  NULL, NULL, FALSE),   -- glass or bottle
    ('istv_ed', '05', 72, TRUE,  NULL, NULL, FALSE),   -- firearm
    ('istv_ed', '06', 75, TRUE,  NULL, NULL, FALSE),   -- corrosive substance
    ('istv_ed', '07', 79, NULL,  NULL, NULL, NULL),    -- other (see ASSAULT METHOD OTHER DESCRIPTION)
    ('istv_ed', '99', 79, NULL,  NULL, NULL, NULL);    -- not known
