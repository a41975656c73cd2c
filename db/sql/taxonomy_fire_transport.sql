-- Fire (London Fire Brigade incident records) and transport (TfL bus safety) suppliers, their categories and
-- their mapping onto the harmonised taxonomy. Seeded by migration 0005_suppliers_fire_transport; its
-- downgrade deletes exactly these rows. Category ids: fire 30-49, transport 50-69.

INSERT INTO suppliers (code, name, access_level, time_precision, expected_cadence, licence, attribution) VALUES
    ('lfb', 'London Fire Brigade incident records (London Datastore)', 10, 'minute', '1 month',
     'UK Open Government Licence v2.0',
     'Contains public sector information licensed under the Open Government Licence v2.0. (London Fire Brigade, London Datastore)'),
    ('tfl_bus', 'TfL bus safety data (injury incidents on the bus network)', 10, 'month', '3 months',
     'TfL open data terms (based on the Open Government Licence v2.0)',
     'Powered by TfL Open Data');

INSERT INTO categories (id, domain, code, name) VALUES
    -- What the brigade found (StopCodeDescription), and for special services what it did (SpecialServiceType).
    (30, 'fire', 'fire_primary',                'Primary fire'),
    (31, 'fire', 'fire_secondary',              'Secondary fire'),
    (32, 'fire', 'fire_chimney',                'Chimney fire'),
    (33, 'fire', 'fire_late_call',              'Fire reported after it was out (late call)'),
    (34, 'fire', 'false_alarm_malicious',       'False alarm: malicious'),
    (35, 'fire', 'false_alarm_good_intent',     'False alarm: good intent'),
    (36, 'fire', 'false_alarm_afa',             'False alarm: automatic fire alarm'),
    (37, 'fire', 'special_service_rtc',         'Special service: road traffic collision or other transport incident'),
    (38, 'fire', 'special_service_flooding',    'Special service: flooding'),
    (39, 'fire', 'special_service_entry',       'Special service: effecting entry or exit'),
    (40, 'fire', 'special_service_lift',        'Special service: lift release'),
    (41, 'fire', 'special_service_rescue',      'Special service: rescue, release or evacuation of people'),
    (42, 'fire', 'special_service_animal',      'Special service: animal assistance'),
    (43, 'fire', 'special_service_medical',     'Special service: medical incident, suicide or attempt'),
    (44, 'fire', 'special_service_hazard',      'Special service: hazardous materials, spills and making safe'),
    (45, 'fire', 'special_service_assist',      'Special service: assisting other agencies'),
    (46, 'fire', 'special_service_other',       'Special service: advice, stand-by, no action and other'),
    -- TfL's Incident Event Type, one category each.
    (50, 'transport', 'transport_assault',                 'Assault'),
    (51, 'transport', 'transport_robbery',                 'Robbery'),
    (52, 'transport', 'transport_vandalism',               'Vandalism or hooliganism'),
    (53, 'transport', 'transport_slip_trip_fall',          'Slip, trip or fall'),
    (54, 'transport', 'transport_onboard_injury',          'Injury on board'),
    (55, 'transport', 'transport_personal_injury',         'Personal injury'),
    (56, 'transport', 'transport_collision',               'Collision'),
    (57, 'transport', 'transport_activity_incident',       'Activity incident'),
    (58, 'transport', 'transport_safety_critical_failure', 'Safety-critical failure'),
    (59, 'transport', 'transport_fire',                    'Fire');

-- LFB: the supplier category is StopCodeDescription, except that 'Special Service' incidents are keyed by
-- their SpecialServiceType ('Special Service: Lift Release'; 'Special Service' alone when that is blank).
-- Themes: the London Datastore incident file says nothing about weapons, domestic abuse or victims (NULL).
-- Arson: it carries no motive either, so a fire's arson flag is NULL (cannot tell); false alarms and special
-- services are not fires (FALSE). loaders/lfb.py sets TRUE only where a row itself says "Deliberate".
INSERT INTO supplier_category_map
    (supplier, supplier_category, category_id, theme_weapon, theme_dava, theme_young_victim, theme_arson) VALUES
    ('lfb', 'Primary Fire',                              30, NULL, NULL, NULL, NULL),
    ('lfb', 'Secondary Fire',                            31, NULL, NULL, NULL, NULL),
    ('lfb', 'Chimney Fire',                              32, NULL, NULL, NULL, NULL),
    ('lfb', 'Late Call',                                 33, NULL, NULL, NULL, NULL),
    ('lfb', 'False alarm - Malicious',                   34, NULL, NULL, NULL, FALSE),
    ('lfb', 'False alarm - Good intent',                 35, NULL, NULL, NULL, FALSE),
    ('lfb', 'AFA',                                       36, NULL, NULL, NULL, FALSE),
    ('lfb', 'Special Service: RTC',                      37, NULL, NULL, NULL, FALSE),
    ('lfb', 'Special Service: Other Transport incident', 37, NULL, NULL, NULL, FALSE),
    ('lfb', 'Special Service: Flooding',                 38, NULL, NULL, NULL, FALSE),
    ('lfb', 'Special Service: Water provision',          38, NULL, NULL, NULL, FALSE),
    ('lfb', 'Flood call attended - Batch mobilised',     38, NULL, NULL, NULL, FALSE),
    ('lfb', 'Special Service: Effecting entry/exit',     39, NULL, NULL, NULL, FALSE),
    ('lfb', 'Special Service: Lift Release',             40, NULL, NULL, NULL, FALSE),
    ('lfb', 'Special Service: Other rescue/release of persons', 41, NULL, NULL, NULL, FALSE),
    ('lfb', 'Special Service: Rescue or evacuation from water', 41, NULL, NULL, NULL, FALSE),
    ('lfb', 'Special Service: Removal of objects from people',  41, NULL, NULL, NULL, FALSE),
    ('lfb', 'Special Service: Evacuation (no fire)',     41, NULL, NULL, NULL, FALSE),
    ('lfb', 'Special Service: Animal assistance incidents', 42, NULL, NULL, NULL, FALSE),
    ('lfb', 'Special Service: Medical Incident',         43, NULL, NULL, NULL, FALSE),
    ('lfb', 'Special Service: Medical Incident - Co-responder', 43, NULL, NULL, NULL, FALSE),
    ('lfb', 'Special Service: Suicide/attempts',         43, NULL, NULL, NULL, FALSE),
    ('lfb', 'Special Service: Hazardous Materials incident', 44, NULL, NULL, NULL, FALSE),
    ('lfb', 'Special Service: Spills and Leaks (not RTC)', 44, NULL, NULL, NULL, FALSE),
    ('lfb', 'Special Service: Making Safe (not RTC)',    44, NULL, NULL, NULL, FALSE),
    ('lfb', 'Special Service: Assist other agencies',    45, NULL, NULL, NULL, FALSE),
    ('lfb', 'Special Service: Advice Only',              46, NULL, NULL, NULL, FALSE),
    ('lfb', 'Special Service: Stand By',                 46, NULL, NULL, NULL, FALSE),
    ('lfb', 'Special Service: No action (not false alarm)', 46, NULL, NULL, NULL, FALSE),
    ('lfb', 'Special Service',                           46, NULL, NULL, NULL, FALSE),
    ('lfb', 'Use of Special Operations Room',            46, NULL, NULL, NULL, FALSE);

-- TfL bus: the supplier category is Incident Event Type. Young victim comes from each row's Victims Age
-- (loaders/tfl_bus.py), so it is NULL here. Weapons: only assaults, robberies and vandalism could involve
-- one and the data does not say (NULL); the rest cannot (FALSE). Domestic abuse: not recorded (NULL).
-- Arson: a bus fire's cause is not recorded (NULL); nothing else is a fire (FALSE).
INSERT INTO supplier_category_map
    (supplier, supplier_category, category_id, theme_weapon, theme_dava, theme_young_victim, theme_arson) VALUES
    ('tfl_bus', 'Assault',                  50, NULL,  NULL, NULL, FALSE),
    ('tfl_bus', 'Robbery',                  51, NULL,  NULL, NULL, FALSE),
    ('tfl_bus', 'Vandalism Hooliganism',    52, NULL,  NULL, NULL, FALSE),
    ('tfl_bus', 'Slip Trip Fall',           53, FALSE, NULL, NULL, FALSE),
    ('tfl_bus', 'Onboard Injuries',         54, FALSE, NULL, NULL, FALSE),
    ('tfl_bus', 'Personal Injury',          55, FALSE, NULL, NULL, FALSE),
    ('tfl_bus', 'Collision Incident',       56, FALSE, NULL, NULL, FALSE),
    ('tfl_bus', 'Activity Incident Event',  57, FALSE, NULL, NULL, FALSE),
    ('tfl_bus', 'Safety Critical Failure',  58, FALSE, NULL, NULL, FALSE),
    ('tfl_bus', 'Fire',                     59, FALSE, NULL, NULL, NULL);
