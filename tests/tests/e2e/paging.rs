//! Listing pages through everything exactly once, in id order, with AIP-158 page tokens.

use std::collections::BTreeSet;

use facesim_client::pb;
use facesim_tests::{import_demo, TestServer};
use tonic::Code;

#[tokio::test]
async fn images_and_identities_page_through_everything_once() {
    let server = TestServer::start().await;
    let client = server.admin().await;
    let report = import_demo(&client, 3).await;
    assert_eq!(report.imported, 15);
    let expected: BTreeSet<u64> = report.results.iter().map(|r| r.image_id).collect();

    let mut seen = vec![];
    let mut sizes = vec![];
    let mut token = String::new();
    loop {
        let page = client
            .datasets()
            .list_images(pb::ListImagesRequest { page_size: 4, page_token: token, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        sizes.push(page.images.len());
        seen.extend(page.images.iter().map(|i| i.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(sizes, vec![4, 4, 4, 3]);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "id order, no repeats: {seen:?}");
    assert_eq!(seen.iter().copied().collect::<BTreeSet<_>>(), expected);

    // Identities, and one identity's images.
    let identities = client
        .datasets()
        .list_identities(pb::ListIdentitiesRequest { dataset: "demo".into(), page_size: 2, page_token: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(identities.identities.len(), 2);
    assert!(!identities.next_page_token.is_empty());
    let rest = client
        .datasets()
        .list_identities(pb::ListIdentitiesRequest {
            dataset: "demo".into(),
            page_size: 2,
            page_token: identities.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((rest.identities.len(), rest.next_page_token.as_str()), (1, ""));
    let person = &identities.identities[1];
    assert_eq!(person.image_count, 5);
    let own = client
        .datasets()
        .list_images(pb::ListImagesRequest { identity_id: person.id, page_size: 3, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.images.len(), 3);
    assert!(own.images.iter().all(|i| i.identity_id == person.id && i.identity == person.name));
    let own_rest = client
        .datasets()
        .list_images(pb::ListImagesRequest {
            identity_id: person.id,
            page_size: 3,
            page_token: own.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own_rest.images.len(), 2);

    // A dataset filter that matches nothing gives an empty last page.
    let none = client
        .datasets()
        .list_images(pb::ListImagesRequest { dataset: "other".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(none.images.is_empty() && none.next_page_token.is_empty());
}

#[tokio::test]
async fn bad_paging_arguments_are_invalid() {
    let server = TestServer::start().await;
    let client = server.admin().await;
    let err = client
        .datasets()
        .list_images(pb::ListImagesRequest { page_token: "not-a-token".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("page_token"));
    let err =
        client.admin().list_users(pb::ListUsersRequest { page_size: -3, page_token: String::new() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Oversized pages are reduced, not refused.
    let users = client
        .admin()
        .list_users(pb::ListUsersRequest { page_size: 1_000_000, page_token: String::new() })
        .await
        .unwrap();
    assert_eq!(users.into_inner().users.len(), 1);
}
