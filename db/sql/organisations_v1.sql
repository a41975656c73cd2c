-- The organisations whose staff use SafeStats, version 1. Seeded by migration 0011; admins add the rest
-- (`safestats orgs add` or /admin/organisations).
--
-- code: a stable short identifier (boroughs use their ONS code, NHS trusts their ODS code).
-- max_tier: the highest tier a member of the organisation may hold (data, changeable by admins): the portal
-- host (GLA) may hold admins; health bodies and MOPAC (home of the Violence Reduction Unit) ISTV analysts;
-- boroughs record-level data for their own boroughs; police, fire and transport partners partner analysts.

INSERT INTO organisations (code, name, kind, max_tier) VALUES
    ('GLA',   'Greater London Authority',                  'authority', 'admin'),
    ('MOPAC', 'Mayor''s Office for Policing and Crime',     'authority', 'istv_analyst'),
    ('MPS',   'Metropolitan Police Service',                'police',    'partner_analyst'),
    ('COLP',  'City of London Police',                      'police',    'partner_analyst'),
    ('BTP',   'British Transport Police',                   'police',    'partner_analyst'),
    ('LFB',   'London Fire Brigade',                        'fire',      'partner_analyst'),
    ('TFL',   'Transport for London',                       'transport', 'partner_analyst'),
    ('LAS',   'London Ambulance Service NHS Trust',         'ambulance', 'istv_analyst');

INSERT INTO organisations (code, name, kind, max_tier)
SELECT code, name, 'borough', 'borough_analyst' FROM (VALUES
    ('E09000001', 'City of London Corporation'),
    ('E09000002', 'London Borough of Barking and Dagenham'),
    ('E09000003', 'London Borough of Barnet'),
    ('E09000004', 'London Borough of Bexley'),
    ('E09000005', 'London Borough of Brent'),
    ('E09000006', 'London Borough of Bromley'),
    ('E09000007', 'London Borough of Camden'),
    ('E09000008', 'London Borough of Croydon'),
    ('E09000009', 'London Borough of Ealing'),
    ('E09000010', 'London Borough of Enfield'),
    ('E09000011', 'Royal Borough of Greenwich'),
    ('E09000012', 'London Borough of Hackney'),
    ('E09000013', 'London Borough of Hammersmith and Fulham'),
    ('E09000014', 'London Borough of Haringey'),
    ('E09000015', 'London Borough of Harrow'),
    ('E09000016', 'London Borough of Havering'),
    ('E09000017', 'London Borough of Hillingdon'),
    ('E09000018', 'London Borough of Hounslow'),
    ('E09000019', 'London Borough of Islington'),
    ('E09000020', 'Royal Borough of Kensington and Chelsea'),
    ('E09000021', 'Royal Borough of Kingston upon Thames'),
    ('E09000022', 'London Borough of Lambeth'),
    ('E09000023', 'London Borough of Lewisham'),
    ('E09000024', 'London Borough of Merton'),
    ('E09000025', 'London Borough of Newham'),
    ('E09000026', 'London Borough of Redbridge'),
    ('E09000027', 'London Borough of Richmond upon Thames'),
    ('E09000028', 'London Borough of Southwark'),
    ('E09000029', 'London Borough of Sutton'),
    ('E09000030', 'London Borough of Tower Hamlets'),
    ('E09000031', 'London Borough of Waltham Forest'),
    ('E09000032', 'London Borough of Wandsworth'),
    ('E09000033', 'Westminster City Council')
) AS b (code, name);

-- London's acute NHS trusts with type 1 emergency departments (the ISTV data's sources), by ODS code.
INSERT INTO organisations (code, name, kind, max_tier)
SELECT code, name, 'nhs_trust', 'istv_analyst' FROM (VALUES
    ('R1H', 'Barts Health NHS Trust'),
    ('RF4', 'Barking, Havering and Redbridge University Hospitals NHS Trust'),
    ('RJ6', 'Croydon Health Services NHS Trust'),
    ('RQM', 'Chelsea and Westminster Hospital NHS Foundation Trust'),
    ('RVR', 'Epsom and St Helier University Hospitals NHS Trust'),
    ('RJ1', 'Guy''s and St Thomas'' NHS Foundation Trust'),
    ('RAS', 'The Hillingdon Hospitals NHS Foundation Trust'),
    ('RQX', 'Homerton Healthcare NHS Foundation Trust'),
    ('RYJ', 'Imperial College Healthcare NHS Trust'),
    ('RJZ', 'King''s College Hospital NHS Foundation Trust'),
    ('RAX', 'Kingston and Richmond NHS Foundation Trust'),
    ('RJ2', 'Lewisham and Greenwich NHS Trust'),
    ('R1K', 'London North West University Healthcare NHS Trust'),
    ('RAP', 'North Middlesex University Hospital NHS Trust'),
    ('RAL', 'Royal Free London NHS Foundation Trust'),
    ('RJ7', 'St George''s University Hospitals NHS Foundation Trust'),
    ('RRV', 'University College London Hospitals NHS Foundation Trust'),
    ('RKE', 'Whittington Health NHS Trust')
) AS t (code, name);
