-- The harmonised taxonomy, version 1: domains, categories, and police.uk's mapping onto them.
-- Seeded by migration 0001. Later suppliers add their mappings in their own migrations.

INSERT INTO domains (code, name, sort_order) VALUES
    ('crime',     'Police recorded crime',  1),
    ('asb',       'Anti-social behaviour',  2),
    ('fire',      'Fire and rescue',        3),
    ('transport', 'Transport',              4),
    ('health',    'Health (ambulance and A&E)', 5);

INSERT INTO categories (id, domain, code, name) VALUES
    (1,  'crime', 'violence_sexual',   'Violence and sexual offences'),
    (2,  'crime', 'robbery',           'Robbery'),
    (3,  'crime', 'burglary',          'Burglary'),
    (4,  'crime', 'vehicle_crime',     'Vehicle crime'),
    (5,  'crime', 'theft_person',      'Theft from the person'),
    (6,  'crime', 'shoplifting',       'Shoplifting'),
    (7,  'crime', 'bicycle_theft',     'Bicycle theft'),
    (8,  'crime', 'other_theft',       'Other theft'),
    (9,  'crime', 'criminal_damage_arson', 'Criminal damage and arson'),
    (10, 'crime', 'drugs',             'Drugs'),
    (11, 'crime', 'weapons',           'Possession of weapons'),
    (12, 'crime', 'public_order',      'Public order'),
    (13, 'crime', 'other_crime',       'Other crime'),
    (20, 'asb',   'anti_social_behaviour', 'Anti-social behaviour');

-- Theme columns: TRUE = every record of this category has the theme; FALSE = none has it;
-- NULL = the supplier's data cannot tell (police.uk publishes no knife, domestic-abuse or age flags).
INSERT INTO supplier_category_map
    (supplier, supplier_category, category_id, theme_weapon, theme_dava, theme_young_victim, theme_arson) VALUES
    ('police_uk', 'Violence and sexual offences', 1,  NULL,  NULL, NULL, FALSE),
    ('police_uk', 'Robbery',                      2,  NULL,  NULL, NULL, FALSE),
    ('police_uk', 'Burglary',                     3,  NULL,  NULL, NULL, FALSE),
    ('police_uk', 'Vehicle crime',                4,  FALSE, NULL, NULL, FALSE),
    ('police_uk', 'Theft from the person',        5,  FALSE, NULL, NULL, FALSE),
    ('police_uk', 'Shoplifting',                  6,  NULL,  NULL, NULL, FALSE),
    ('police_uk', 'Bicycle theft',                7,  FALSE, NULL, NULL, FALSE),
    ('police_uk', 'Other theft',                  8,  FALSE, NULL, NULL, FALSE),
    ('police_uk', 'Criminal damage and arson',    9,  NULL,  NULL, NULL, NULL),
    ('police_uk', 'Drugs',                        10, NULL,  NULL, NULL, FALSE),
    ('police_uk', 'Possession of weapons',        11, TRUE,  NULL, NULL, FALSE),
    ('police_uk', 'Public order',                 12, NULL,  NULL, NULL, FALSE),
    ('police_uk', 'Other crime',                  13, NULL,  NULL, NULL, NULL),
    ('police_uk', 'Anti-social behaviour',        20, NULL,  NULL, NULL, FALSE);
